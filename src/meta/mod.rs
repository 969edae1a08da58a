//! What Meta charges for WhatsApp (SPEC-meta): its rate cards as it publishes them
//! ([`rates`]), the user's market from the phone number ([`markets`]), and the `[meta]`
//! section of a rate card ([`config`]).

pub mod analytics;
pub mod config;
pub mod cost;
pub mod fetch;
pub mod markets;
pub mod pricing;
pub mod rates;
pub mod reconcile;
pub mod reference;
pub mod simulated;
pub mod units;

/// Meta's pricing categories, as `meta_units.parquet` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
    AuthenticationInternational,
    Service,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Marketing,
        Category::Utility,
        Category::Authentication,
        Category::AuthenticationInternational,
        Category::Service,
    ];

    /// Its name in the outputs and the card: `authentication_international`.
    pub fn name(self) -> &'static str {
        match self {
            Category::Marketing => "marketing",
            Category::Utility => "utility",
            Category::Authentication => "authentication",
            Category::AuthenticationInternational => "authentication_international",
            Category::Service => "service",
        }
    }

    /// Its place in [`Category::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The category a name gives, however Meta's surfaces spell it (`authentication-
    /// international`, `AUTHENTICATION_INTERNATIONAL`).
    pub fn parse(name: &str) -> Option<Category> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        Category::ALL.into_iter().find(|c| c.name() == name)
    }
}
