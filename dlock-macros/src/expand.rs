//! The expansion of `#[try_lock]`.

use crate::args::Args;
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{parse_quote, parse_quote_spanned, ItemFn, ReturnType, Type};

/// Entry point: parse, check, expand; every failure becomes `compile_error!`.
pub fn try_lock(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr, item.clone()) {
        Ok(ts) => ts,
        Err(e) => {
            // Keep the original item so the rest of the crate still type-checks
            // and the user sees only the pointed error.
            let mut out = e.to_compile_error();
            out.extend(item);
            out
        }
    }
}

fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => return Err(not_a_fn(item)),
    };
    let parsed = syn::parse2::<Args>(attr);
    // Report a non-async fn even when the arguments are also wrong.
    if func.sig.asyncness.is_none() {
        let mut err = syn::Error::new(
            func.sig.fn_token.span(),
            "#[dlock::try_lock] goes on an `async fn`: taking the lock talks to the \
             coordinator; make the function `async`",
        );
        if let Err(e) = parsed {
            err.combine(e);
        }
        return Err(err);
    }
    let mut args = parsed?;
    args.span = Some(Span::call_site());
    let name = args.require_name()?.clone();

    let value_ty: Type = match &func.sig.output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let output_span = func.sig.output.span();

    let locker_var = format_ident!("__dlock_locker", span = Span::mixed_site());
    let call_var = format_ident!("__dlock_call", span = Span::mixed_site());

    let name_tokens = match &name {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => quote!(::std::string::String::from(#s)),
        e => quote_spanned!(e.span()=> ::std::string::ToString::to_string(&(#e))),
    };
    let opt_dur = |d: &Option<crate::args::DurationArg>| match d {
        Some(d) => {
            let t = d.tokens();
            quote!(::core::option::Option::Some(#t))
        }
        None => quote!(::core::option::Option::None),
    };
    let lock_for = opt_dur(&args.lock_for);
    let at_least = opt_dur(&args.at_least);
    let wait = opt_dur(&args.wait);
    let opt_bool = |b: &Option<syn::Expr>| match b {
        Some(e) => quote_spanned!(e.span()=> ::core::option::Option::Some({ let b: bool = #e; b })),
        None => quote!(::core::option::Option::None),
    };
    let keep_alive = opt_bool(&args.keep_alive);
    let max_hold = opt_dur(&args.max_hold);
    let cancel_on_lost = opt_bool(&args.cancel_on_lost);
    let owner = match &args.owner {
        Some(e) => quote_spanned!(e.span()=>
            ::core::option::Option::Some(::std::string::ToString::to_string(&(#e)))),
        None => quote!(::core::option::Option::None),
    };
    let locker = match &args.locker {
        Some(e) => quote_spanned!(e.span()=> ::dlock::__private::LockerSource::to_locker(&(#e))),
        None => quote!(::dlock::default_locker()?),
    };

    // The body becomes an async block. Its tail and every `return` are
    // coerced to the declared type, so `?`, `return` and deref coercions
    // behave as in the original function. `impl Trait` cannot be named in a
    // `let`, and needs no coercion.
    let body = if contains_impl_trait(&value_ty) {
        let block = &func.block;
        quote!(async move #block)
    } else {
        let mut block = (*func.block).clone();
        ReturnCoercer { ty: &value_ty }.visit_block_mut(&mut block);
        let ret = format_ident!("__dlock_ret", span = Span::mixed_site());
        quote!(::dlock::__private::body::<#value_ty, _>(async move {
            let #ret: #value_ty = #block;
            #[allow(unreachable_code)]
            #ret
        }))
    };

    let doc_name = match &name {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => format!("`{}`", s.value()),
        e => format!("named by `{}`", e.to_token_stream()),
    };
    let doc = format!(
        " Runs only when the distributed lock {doc_name} could be taken \
         (`#[dlock::try_lock]`): `Ok(Some(_))` when it ran, `Ok(None)` when another \
         owner held the lock."
    );

    func.sig.output = syn::parse2(quote_spanned!(output_span=>
        -> ::dlock::Result<::core::option::Option<#value_ty>>
    ))?;
    let new_block: syn::Block = syn::parse2(quote!({
        let #call_var = ::dlock::__private::TryLockCall {
            name: #name_tokens,
            lock_for: #lock_for,
            at_least: #at_least,
            wait: #wait,
            keep_alive: #keep_alive,
            owner: #owner,
            max_hold: #max_hold,
            cancel_on_lost: #cancel_on_lost,
        };
        let #locker_var: ::dlock::Locker = #locker;
        #call_var.run(#locker_var, #body).await
    }))?;
    *func.block = new_block;
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    let block = &func.block;
    let has_doc = attrs.iter().any(|a| a.path().is_ident("doc"));
    let doc_attr = if has_doc {
        quote!(#[doc = ""] #[doc = #doc])
    } else {
        quote!(#[doc = #doc])
    };
    Ok(quote! {
        #(#attrs)*
        #doc_attr
        #vis #sig #block
    })
}

fn not_a_fn(item: TokenStream) -> syn::Error {
    // A trait method without a body parses as a signature followed by `;`.
    if let Ok(m) = syn::parse2::<syn::TraitItemFn>(item.clone()) {
        if m.default.is_none() {
            return syn::Error::new(
                m.sig.ident.span(),
                "#[dlock::try_lock] needs a function body to wrap; put it on the \
                 implementation of this method, not on its declaration in the trait",
            );
        }
    }
    let span = item
        .into_iter()
        .next()
        .map(|t| t.span())
        .unwrap_or_else(Span::call_site);
    syn::Error::new(
        span,
        "#[dlock::try_lock] goes on an `async fn` (a free function or a method)",
    )
}

/// Rewrites `return value` (outside nested closures, async blocks and items)
/// to `return { let r: T = value; r }` so it coerces to the declared type.
struct ReturnCoercer<'a> {
    ty: &'a Type,
}

impl VisitMut for ReturnCoercer<'_> {
    fn visit_expr_mut(&mut self, e: &mut syn::Expr) {
        match e {
            // Their `return`s belong to them.
            syn::Expr::Closure(_) | syn::Expr::Async(_) => {}
            syn::Expr::Return(r) => {
                if let Some(value) = r.expr.as_mut() {
                    self.visit_expr_mut(value);
                    let ty = self.ty;
                    let ret = format_ident!("__dlock_ret", span = Span::mixed_site());
                    let span = value.span();
                    **value = parse_quote_spanned!(span=> { let #ret: #ty = #value; #ret });
                }
            }
            _ => visit_mut::visit_expr_mut(self, e),
        }
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

fn contains_impl_trait(ty: &Type) -> bool {
    fn walk(ts: TokenStream) -> bool {
        ts.into_iter().any(|t| match t {
            TokenTree::Ident(i) => i == "impl",
            TokenTree::Group(g) => walk(g.stream()),
            _ => false,
        })
    }
    walk(ty.to_token_stream())
}
