// Curator InterProcessMutex peer for scripts/bench/peers.py. Prints raw
// samples only; peers.py computes every statistic, the same way for all peers.
//
//   uncontended CONNECT PATH WARMUP ITERS  -> one line per measured acquire: ns
//   contended   CONNECT PATH CLIENTS SECS  -> one line per hold: client t_acq t_rel
//
// Times are System.nanoTime() (CLOCK_MONOTONIC on Linux). In the contended
// run each thread has its own CuratorFramework (own ZooKeeper session).
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;

public class CuratorBench {
    static volatile Exception failure; // first error of any contended thread

    static CuratorFramework client(String connect) throws InterruptedException {
        CuratorFramework c = CuratorFrameworkFactory.newClient(connect, new ExponentialBackoffRetry(100, 3));
        c.start();
        if (!c.blockUntilConnected(30, TimeUnit.SECONDS)) throw new IllegalStateException("no connection to " + connect);
        return c;
    }

    public static void main(String[] a) throws Exception {
        String mode = a[0], connect = a[1], path = a[2];
        StringBuilder out = new StringBuilder();
        if (mode.equals("uncontended")) {
            int warmup = Integer.parseInt(a[3]), iters = Integer.parseInt(a[4]);
            try (CuratorFramework c = client(connect)) {
                InterProcessMutex m = new InterProcessMutex(c, path);
                for (int i = 0; i < warmup + iters; i++) {
                    long t0 = System.nanoTime();
                    m.acquire();
                    long t1 = System.nanoTime();
                    m.release();
                    if (i >= warmup) out.append(t1 - t0).append('\n');
                }
            }
        } else {
            int clients = Integer.parseInt(a[3]);
            long runNs = (long) (Double.parseDouble(a[4]) * 1e9);
            CyclicBarrier start = new CyclicBarrier(clients);
            @SuppressWarnings("unchecked")
            List<long[]>[] holds = new List[clients];
            Thread[] threads = new Thread[clients];
            for (int id = 0; id < clients; id++) {
                final int me = id;
                holds[me] = new ArrayList<>();
                threads[me] = new Thread(() -> {
                    try (CuratorFramework c = client(connect)) {
                        InterProcessMutex m = new InterProcessMutex(c, path);
                        start.await();
                        long deadline = System.nanoTime() + runNs;
                        while (System.nanoTime() < deadline) {
                            m.acquire(); // blocks until held
                            long tAcq = System.nanoTime();
                            Thread.sleep(1);
                            long tRel = System.nanoTime();
                            m.release();
                            holds[me].add(new long[] {tAcq, tRel});
                        }
                    } catch (Exception e) {
                        failure = e;
                    }
                });
                threads[me].start();
            }
            for (Thread t : threads) t.join();
            if (failure != null) throw failure;
            for (int id = 0; id < clients; id++)
                for (long[] h : holds[id]) out.append(id).append(' ').append(h[0]).append(' ').append(h[1]).append('\n');
        }
        System.out.print(out);
    }
}
