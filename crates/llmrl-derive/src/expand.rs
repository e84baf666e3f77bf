//! The derive logic, on `proc_macro2` types so that it can be unit tested.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{Attribute, Data, DataEnum, DeriveInput, Fields, Ident, LitStr, Variant};

/// Which derive is being expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[derive(ModelId)]`.
    ModelId,
    /// `#[derive(JobType)]`.
    JobType,
}

impl Kind {
    /// The derive's name, as written in `#[derive(...)]`.
    fn derive_name(self) -> &'static str {
        match self {
            Kind::ModelId => "ModelId",
            Kind::JobType => "JobType",
        }
    }
}

/// The name of the helper attribute.
const ATTR: &str = "llmrl";

/// One accepted variant: its identifier and its name.
struct Entry<'a> {
    ident: &'a Ident,
    name: String,
    /// Where to point an error about the name: the override literal, or the identifier.
    name_span: Span,
}

/// Accumulates errors so that one expansion reports every problem it finds.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Expands `#[derive(ModelId)]` or `#[derive(JobType)]` on `input`.
///
/// Returns the impls, or every error found in the input combined into one `syn::Error`.
pub(crate) fn expand(input: &DeriveInput, kind: Kind) -> syn::Result<TokenStream> {
    let data = enum_data(input, kind)?;
    let mut errors = Errors::default();

    for attr in attrs(&input.attrs) {
        errors.push(syn::Error::new_spanned(
            attr,
            "llmrl: `#[llmrl(...)]` goes on variants, not on the enum itself",
        ));
    }
    check_generics(input, &mut errors);

    if data.variants.is_empty() {
        errors.push(syn::Error::new_spanned(
            &input.ident,
            "llmrl: an id enum needs at least one variant",
        ));
    }

    let mut entries: Vec<Entry<'_>> = Vec::with_capacity(data.variants.len());
    for variant in &data.variants {
        if let Some(entry) = check_variant(variant, &mut errors) {
            entries.push(entry);
        }
    }
    check_duplicates(&entries, &mut errors);
    errors.finish()?;

    Ok(generate(&input.ident, &entries, kind))
}

/// The enum's variants, or an error if `input` is a struct or a union.
fn enum_data(input: &DeriveInput, kind: Kind) -> syn::Result<&DataEnum> {
    let message = format!(
        "llmrl: `#[derive({})]` only supports fieldless enums",
        kind.derive_name()
    );
    match &input.data {
        Data::Enum(data) => Ok(data),
        Data::Struct(data) => Err(syn::Error::new_spanned(data.struct_token, message)),
        Data::Union(data) => Err(syn::Error::new_spanned(data.union_token, message)),
    }
}

/// The `#[llmrl(...)]` attributes among `attrs`.
fn attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident(ATTR))
}

/// Rejects type, lifetime and const parameters, and where clauses.
fn check_generics(input: &DeriveInput, errors: &mut Errors) {
    let generics = &input.generics;
    if !generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            generics,
            "llmrl: an id enum cannot have generic parameters",
        ));
    } else if let Some(where_clause) = &generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "llmrl: an id enum cannot have a where clause",
        ));
    }
}

/// Checks one variant and works out its name; `None` if it has errors (pushed to `errors`).
fn check_variant<'a>(variant: &'a Variant, errors: &mut Errors) -> Option<Entry<'a>> {
    let mut ok = true;
    if !matches!(variant.fields, Fields::Unit) {
        errors.push(syn::Error::new_spanned(
            &variant.fields,
            format!(
                "llmrl: variant `{}` has fields; id enums must be fieldless",
                variant.ident
            ),
        ));
        ok = false;
    }

    let mut name: Option<LitStr> = None;
    for attr in attrs(&variant.attrs) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if name.is_some() {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "llmrl: `name` is given more than once for this variant",
                    ));
                }
                if lit.value().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        "llmrl: `name` must not be empty",
                    ));
                }
                name = Some(lit);
                Ok(())
            } else {
                let key = meta.path.to_token_stream().to_string().replace(' ', "");
                Err(meta.error(format!(
                    "llmrl: unknown key `{key}` in `#[llmrl(...)]`; the only supported key is `name`"
                )))
            }
        });
        if let Err(error) = parsed {
            errors.push(error);
            ok = false;
        }
    }

    ok.then(|| match name {
        Some(lit) => Entry {
            ident: &variant.ident,
            name: lit.value(),
            name_span: lit.span(),
        },
        None => Entry {
            ident: &variant.ident,
            name: variant.ident.unraw().to_string(),
            name_span: variant.ident.span(),
        },
    })
}

/// Rejects two variants with the same name, pointing at the later one.
fn check_duplicates(entries: &[Entry<'_>], errors: &mut Errors) {
    for (i, entry) in entries.iter().enumerate() {
        if let Some(first) = entries[..i].iter().find(|e| e.name == entry.name) {
            errors.push(syn::Error::new(
                entry.name_span,
                format!(
                    "llmrl: duplicate name {:?}: variants `{}` and `{}` would share it",
                    entry.name, first.ident, entry.ident
                ),
            ));
        }
    }
}

/// The impls for a checked enum.
fn generate(ident: &Ident, entries: &[Entry<'_>], kind: Kind) -> TokenStream {
    let count = entries.len();
    // Variants are named through the enum, not `Self`: `Self::COUNT` would be ambiguous with the
    // associated constant if a variant were called `COUNT`.
    let paths: Vec<TokenStream> = entries
        .iter()
        .map(|entry| {
            let variant = entry.ident;
            quote!(#ident::#variant)
        })
        .collect();
    let indices = 0..count;
    let names = entries
        .iter()
        .map(|entry| LitStr::new(&entry.name, entry.ident.span()));

    let marker = match kind {
        Kind::ModelId => quote! {
            #[automatically_derived]
            impl ::llmrl::ModelId for #ident {}
        },
        Kind::JobType => quote! {
            #[automatically_derived]
            impl ::llmrl::JobType for #ident {}
        },
    };
    let single = (kind == Kind::ModelId && count == 1).then(|| {
        quote! {
            #[automatically_derived]
            impl ::llmrl::SingleModel for #ident {}
        }
    });

    quote! {
        #[automatically_derived]
        #[allow(deprecated)]
        impl ::llmrl::Id for #ident {
            const COUNT: ::core::primitive::usize = #count;
            const ALL: &'static [Self] = &[#(#paths),*];

            #[inline]
            fn index(self) -> ::core::primitive::usize {
                match self {
                    #(#paths => #indices,)*
                }
            }

            #[inline]
            fn name(self) -> &'static ::core::primitive::str {
                match self {
                    #(#paths => #names,)*
                }
            }
        }
        #marker
        #single
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn ok(input: &DeriveInput, kind: Kind) -> String {
        match expand(input, kind) {
            Ok(tokens) => tokens.to_string(),
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    fn messages(input: &DeriveInput, kind: Kind) -> Vec<String> {
        match expand(input, kind) {
            Ok(tokens) => panic!("expected an error, got {tokens}"),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn message(input: &DeriveInput, kind: Kind) -> String {
        let mut all = messages(input, kind);
        assert_eq!(all.len(), 1, "expected exactly one error, got {all:?}");
        all.remove(0)
    }

    #[test]
    fn model_id_expansion() {
        let input: DeriveInput = parse_quote! {
            #[derive(Clone, Copy)]
            enum Model {
                #[llmrl(name = "openai/gpt-5.2")]
                Gpt,
                /// Docs are fine.
                Claude,
            }
        };
        let expected = quote! {
            #[automatically_derived]
            #[allow(deprecated)]
            impl ::llmrl::Id for Model {
                const COUNT: ::core::primitive::usize = 2usize;
                const ALL: &'static [Self] = &[Model::Gpt, Model::Claude];

                #[inline]
                fn index(self) -> ::core::primitive::usize {
                    match self {
                        Model::Gpt => 0usize,
                        Model::Claude => 1usize,
                    }
                }

                #[inline]
                fn name(self) -> &'static ::core::primitive::str {
                    match self {
                        Model::Gpt => "openai/gpt-5.2",
                        Model::Claude => "Claude",
                    }
                }
            }
            #[automatically_derived]
            impl ::llmrl::ModelId for Model {}
        };
        assert_eq!(ok(&input, Kind::ModelId), expected.to_string());
    }

    #[test]
    fn single_model_only_for_one_variant_model_enums() {
        let one: DeriveInput = parse_quote!(
            enum M {
                Only,
            }
        );
        let two: DeriveInput = parse_quote!(
            enum M {
                A,
                B,
            }
        );
        let single = "impl :: llmrl :: SingleModel for M { }";
        assert!(ok(&one, Kind::ModelId).contains(single));
        assert!(!ok(&two, Kind::ModelId).contains(single));
        assert!(!ok(&one, Kind::JobType).contains(single));
    }

    #[test]
    fn job_type_expansion() {
        let input: DeriveInput = parse_quote!(
            pub enum Job {
                Summarize,
                Translate,
            }
        );
        let out = ok(&input, Kind::JobType);
        assert!(out.contains("impl :: llmrl :: Id for Job"));
        assert!(out.contains("impl :: llmrl :: JobType for Job { }"));
        assert!(!out.contains("ModelId"));
        assert!(!out.contains("SingleModel"));
    }

    #[test]
    fn discriminants_are_ignored() {
        let input: DeriveInput = parse_quote!(
            #[repr(u8)]
            enum M {
                A = 7,
                B = 3,
            }
        );
        let out = ok(&input, Kind::ModelId);
        assert!(
            out.contains("M :: A => 0usize , M :: B => 1usize ,"),
            "{out}"
        );
    }

    #[test]
    fn raw_identifiers_are_named_without_prefix() {
        let input: DeriveInput = parse_quote!(
            enum J {
                r#Type,
            }
        );
        let out = ok(&input, Kind::JobType);
        assert!(out.contains("J :: r#Type => \"Type\""), "{out}");
    }

    #[test]
    fn names_are_escaped() {
        let input: DeriveInput = parse_quote!(
            enum J {
                #[llmrl(name = "a \"quoted\" \\ name")]
                A,
            }
        );
        let out = ok(&input, Kind::JobType);
        assert!(out.contains(r#"J :: A => "a \"quoted\" \\ name""#), "{out}");
    }

    #[test]
    fn rejects_struct() {
        let input: DeriveInput = parse_quote!(
            struct S;
        );
        assert_eq!(
            message(&input, Kind::ModelId),
            "llmrl: `#[derive(ModelId)]` only supports fieldless enums"
        );
        assert_eq!(
            message(&input, Kind::JobType),
            "llmrl: `#[derive(JobType)]` only supports fieldless enums"
        );
    }

    #[test]
    fn rejects_union() {
        let input: DeriveInput = parse_quote!(
            union U {
                a: u32,
            }
        );
        assert_eq!(
            message(&input, Kind::JobType),
            "llmrl: `#[derive(JobType)]` only supports fieldless enums"
        );
    }

    #[test]
    fn rejects_empty_enum() {
        let input: DeriveInput = parse_quote!(
            enum E {}
        );
        assert_eq!(
            message(&input, Kind::ModelId),
            "llmrl: an id enum needs at least one variant"
        );
    }

    #[test]
    fn rejects_variants_with_fields() {
        let input: DeriveInput = parse_quote!(
            enum E {
                A(u32),
                B { x: u8 },
                C(),
                D,
            }
        );
        assert_eq!(
            messages(&input, Kind::ModelId),
            [
                "llmrl: variant `A` has fields; id enums must be fieldless",
                "llmrl: variant `B` has fields; id enums must be fieldless",
                "llmrl: variant `C` has fields; id enums must be fieldless",
            ]
        );
    }

    #[test]
    fn rejects_generics() {
        let ty: DeriveInput = parse_quote!(
            enum E<T> {
                A,
            }
        );
        let lifetime: DeriveInput = parse_quote!(
            enum E<'a> {
                A,
            }
        );
        let where_clause: DeriveInput = parse_quote!(
            enum E
            where
                u8: Copy,
            {
                A,
            }
        );
        for input in [&ty, &lifetime] {
            assert_eq!(
                message(input, Kind::JobType),
                "llmrl: an id enum cannot have generic parameters"
            );
        }
        assert_eq!(
            message(&where_clause, Kind::JobType),
            "llmrl: an id enum cannot have a where clause"
        );
    }

    #[test]
    fn rejects_unknown_keys() {
        let input: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(rename = "x")]
                A,
                #[llmrl(name = "b", skip)]
                B,
            }
        );
        assert_eq!(
            messages(&input, Kind::ModelId),
            [
                "llmrl: unknown key `rename` in `#[llmrl(...)]`; the only supported key is `name`",
                "llmrl: unknown key `skip` in `#[llmrl(...)]`; the only supported key is `name`",
            ]
        );
    }

    #[test]
    fn rejects_malformed_attributes() {
        let not_a_string: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(name = 5)]
                A,
            }
        );
        assert_eq!(
            message(&not_a_string, Kind::ModelId),
            "expected string literal"
        );
        let bare: DeriveInput = parse_quote!(
            enum E {
                #[llmrl]
                A,
            }
        );
        assert_eq!(
            message(&bare, Kind::ModelId),
            "expected attribute arguments in parentheses: #[llmrl(...)]"
        );
    }

    #[test]
    fn rejects_empty_name() {
        let input: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(name = "")]
                A,
            }
        );
        assert_eq!(
            message(&input, Kind::ModelId),
            "llmrl: `name` must not be empty"
        );
    }

    #[test]
    fn rejects_name_given_twice() {
        let same_attr: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(name = "a", name = "b")]
                A,
            }
        );
        let two_attrs: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(name = "a")]
                #[llmrl(name = "b")]
                A,
            }
        );
        for input in [&same_attr, &two_attrs] {
            assert_eq!(
                message(input, Kind::JobType),
                "llmrl: `name` is given more than once for this variant"
            );
        }
    }

    #[test]
    fn rejects_duplicate_names() {
        let override_vs_default: DeriveInput = parse_quote!(
            enum E {
                Gpt,
                #[llmrl(name = "Gpt")]
                Other,
            }
        );
        assert_eq!(
            message(&override_vs_default, Kind::ModelId),
            "llmrl: duplicate name \"Gpt\": variants `Gpt` and `Other` would share it"
        );
        let default_vs_override: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(name = "B")]
                A,
                B,
            }
        );
        assert_eq!(
            message(&default_vs_override, Kind::ModelId),
            "llmrl: duplicate name \"B\": variants `A` and `B` would share it"
        );
        let three: DeriveInput = parse_quote!(
            enum E {
                #[llmrl(name = "x")]
                A,
                #[llmrl(name = "x")]
                B,
                #[llmrl(name = "x")]
                C,
            }
        );
        assert_eq!(
            messages(&three, Kind::ModelId),
            [
                "llmrl: duplicate name \"x\": variants `A` and `B` would share it",
                "llmrl: duplicate name \"x\": variants `A` and `C` would share it",
            ]
        );
    }

    #[test]
    fn rejects_attribute_on_enum() {
        let input: DeriveInput = parse_quote!(
            #[llmrl(name = "e")]
            enum E {
                A,
            }
        );
        assert_eq!(
            message(&input, Kind::ModelId),
            "llmrl: `#[llmrl(...)]` goes on variants, not on the enum itself"
        );
    }

    #[test]
    fn other_attributes_are_ignored() {
        let input: DeriveInput = parse_quote!(
            #[serde(rename_all = "kebab-case")]
            enum E {
                #[serde(rename = "a")]
                #[doc = "A."]
                A,
            }
        );
        assert!(ok(&input, Kind::ModelId).contains("E :: A => \"A\""));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let input: DeriveInput = parse_quote!(
            enum E<T> {
                A(T),
                #[llmrl(name = "")]
                B,
            }
        );
        assert_eq!(
            messages(&input, Kind::ModelId),
            [
                "llmrl: an id enum cannot have generic parameters",
                "llmrl: variant `A` has fields; id enums must be fieldless",
                "llmrl: `name` must not be empty",
            ]
        );
    }
}
