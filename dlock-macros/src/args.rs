//! Parsing and compile-time checking of `#[try_lock(...)]` arguments.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use std::time::Duration;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

/// Longest lock name and owner the backends accept, in bytes (dlock-core's
/// `MAX_NAME_BYTES` / `MAX_OWNER_BYTES`; a proc-macro crate cannot depend on it).
const MAX_BYTES: usize = 255;

/// Every argument the attribute knows, for the "unknown argument" message.
pub const KNOWN: &[&str] = &[
    "name",
    "lock_for",
    "at_least",
    "wait",
    "keep_alive",
    "max_hold",
    "cancel_on_lost",
    "owner",
    "locker",
];

/// A duration argument: a literal checked now, or an expression of type
/// `std::time::Duration` evaluated at run time.
pub enum DurationArg {
    /// `"10m"`, parsed at compile time.
    Lit { value: Duration, lit: LitStr },
    /// Anything else; must evaluate to `std::time::Duration`.
    Expr(Box<Expr>),
}

impl DurationArg {
    /// Tokens building the `Duration`.
    pub fn tokens(&self) -> TokenStream {
        match self {
            DurationArg::Lit { value, lit } => {
                let secs = value.as_secs();
                let nanos = value.subsec_nanos();
                quote::quote_spanned!(lit.span()=> ::core::time::Duration::new(#secs, #nanos))
            }
            DurationArg::Expr(e) => quote!({
                let d: ::core::time::Duration = #e;
                d
            }),
        }
    }

    fn literal(&self) -> Option<(Duration, &LitStr)> {
        match self {
            DurationArg::Lit { value, lit } => Some((*value, lit)),
            DurationArg::Expr(_) => None,
        }
    }
}

/// The parsed attribute.
#[derive(Default)]
pub struct Args {
    /// Where the attribute sits, for errors about missing arguments.
    pub span: Option<Span>,
    /// `name = "emailLock"` or any expression that implements `Display`.
    pub name: Option<Expr>,
    /// `lock_for = "10m"`.
    pub lock_for: Option<DurationArg>,
    /// `at_least = "30s"`.
    pub at_least: Option<DurationArg>,
    /// `wait = "1m"`.
    pub wait: Option<DurationArg>,
    /// `keep_alive = false`.
    pub keep_alive: Option<Expr>,
    /// `max_hold = "1h"`.
    pub max_hold: Option<DurationArg>,
    /// `cancel_on_lost = false`.
    pub cancel_on_lost: Option<Expr>,
    /// `owner = "node-a"`.
    pub owner: Option<Expr>,
    /// `locker = self.locker`.
    pub locker: Option<Expr>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        let mut args = Args::default();
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match errors.as_mut() {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        for meta in metas {
            if let Err(e) = args.take(meta) {
                push(e);
            }
        }
        if let Err(e) = args.check_consistency() {
            push(e);
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

impl Args {
    fn take(&mut self, meta: Meta) -> syn::Result<()> {
        let nv = match meta {
            Meta::NameValue(nv) => nv,
            other => {
                let key = other
                    .path()
                    .get_ident()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| other.path().to_token_stream().to_string());
                return Err(syn::Error::new(
                    other.span(),
                    format!(
                        "expected `{key} = ...`; #[try_lock] takes key = value arguments, \
                         e.g. #[dlock::try_lock(name = \"emailLock\", lock_for = \"10m\")]"
                    ),
                ));
            }
        };
        let Some(ident) = nv.path.get_ident() else {
            return Err(unknown(&nv.path));
        };
        let key = ident.to_string();
        let value = nv.value;
        match key.as_str() {
            "name" => {
                check_text_literal(&value, "name", "lock name")?;
                set(&mut self.name, value, ident)
            }
            "lock_for" => {
                let d = duration(value, "lock_for")?;
                if let Some((v, lit)) = d.literal() {
                    if v.is_zero() {
                        return Err(syn::Error::new(
                            lit.span(),
                            "lock_for must be greater than zero: it bounds how long the lock \
                             stays taken if this node dies",
                        ));
                    }
                }
                set(&mut self.lock_for, d, ident)
            }
            "at_least" => {
                let d = duration(value, "at_least")?;
                set(&mut self.at_least, d, ident)
            }
            "wait" => {
                let d = duration(value, "wait")?;
                set(&mut self.wait, d, ident)
            }
            "keep_alive" => set(&mut self.keep_alive, value, ident),
            "max_hold" => {
                let d = duration(value, "max_hold")?;
                if let Some((v, lit)) = d.literal() {
                    if v.is_zero() {
                        return Err(syn::Error::new(
                            lit.span(),
                            "max_hold must be greater than zero (leave it out for no ceiling)",
                        ));
                    }
                }
                set(&mut self.max_hold, d, ident)
            }
            "cancel_on_lost" => set(&mut self.cancel_on_lost, value, ident),
            "owner" => {
                check_text_literal(&value, "owner", "owner")?;
                set(&mut self.owner, value, ident)
            }
            "locker" => set(&mut self.locker, value, ident),
            _ => Err(unknown(&nv.path)),
        }
    }

    fn check_consistency(&self) -> syn::Result<()> {
        if let (Some(at_least), Some(lock_for)) = (&self.at_least, &self.lock_for) {
            if let (Some((least, lit)), Some((most, _))) = (at_least.literal(), lock_for.literal())
            {
                if least > most {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "at_least ({}) is longer than lock_for ({}): the lock could never be \
                             held that long; shorten at_least or lengthen lock_for",
                            humantime::format_duration(least),
                            humantime::format_duration(most)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Fails when a required argument is missing.
    pub fn require_name(&self) -> syn::Result<&Expr> {
        self.name.as_ref().ok_or_else(|| {
            syn::Error::new(
                self.span.unwrap_or_else(Span::call_site),
                "#[try_lock] needs a lock name: #[dlock::try_lock(name = \"emailLock\", lock_for = \"10m\")]",
            )
        })
    }
}

fn set<T>(slot: &mut Option<T>, value: T, ident: &syn::Ident) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            ident.span(),
            format!("`{ident}` is given twice"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn unknown(path: &syn::Path) -> syn::Error {
    let key = path.to_token_stream().to_string();
    let hint = match key.as_str() {
        "lock_at_most_for" | "at_most" | "lease" => " (did you mean `lock_for`?)",
        "lock_at_least_for" | "lock_for_at_least" | "min" => " (did you mean `at_least`?)",
        "wait_for" | "timeout" => " (did you mean `wait`?)",
        "max_duration" | "deadline" | "max_lock_for" => " (did you mean `max_hold`?)",
        "cancel_on_loss" | "cancel" | "abort_on_lost" => " (did you mean `cancel_on_lost`?)",
        _ => "",
    };
    syn::Error::new(
        path.span(),
        format!(
            "unknown #[try_lock] argument `{key}`{hint}; known arguments: {}",
            KNOWN.join(", ")
        ),
    )
}

fn str_lit(e: &Expr) -> Option<&LitStr> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s),
        _ => None,
    }
}

fn check_text_literal(e: &Expr, key: &str, what: &str) -> syn::Result<()> {
    if let Some(s) = str_lit(e) {
        let v = s.value();
        if v.is_empty() {
            return Err(syn::Error::new(
                s.span(),
                format!("{key} must not be empty"),
            ));
        }
        if v.len() > MAX_BYTES {
            return Err(syn::Error::new(
                s.span(),
                format!(
                    "{what} is {} bytes long; every backend accepts at most {MAX_BYTES} bytes",
                    v.len()
                ),
            ));
        }
        if v.contains('\0') {
            return Err(syn::Error::new(
                s.span(),
                format!("{what} must not contain NUL"),
            ));
        }
    }
    Ok(())
}

fn duration(e: Expr, key: &str) -> syn::Result<DurationArg> {
    if let Some(lit) = str_lit(&e) {
        let text = lit.value();
        return match humantime::parse_duration(&text) {
            Ok(value) => Ok(DurationArg::Lit {
                value,
                lit: lit.clone(),
            }),
            Err(err) => Err(syn::Error::new(
                lit.span(),
                format!(
                    "{key} = {text:?} is not a duration: {err}; write e.g. \"30s\", \"10m\", \
                     \"1h 30m\" or \"250ms\""
                ),
            )),
        };
    }
    if let Expr::Lit(ExprLit { lit, .. }) = &e {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "{key} takes a duration string such as \"10m\" or \"30s\" (or an expression \
                 of type std::time::Duration)"
            ),
        ));
    }
    Ok(DurationArg::Expr(Box::new(e)))
}
