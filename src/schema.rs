//! The input contract in one place: column names, the accepted values of the enumerated
//! columns and their compact codes. Every other stage speaks in these names and codes.

/// Required input columns, in the order the SPEC lists them.
pub const REQUIRED_COLUMNS: [&str; 7] = [
    MESSAGE_ID,
    ACCOUNT_ID,
    CHANNEL,
    BUSINESS_ID,
    USER_ID,
    DIRECTION,
    TIMESTAMP,
];
/// Optional input columns, read when present: `kind` and `status` by every rule set,
/// `category` by Meta's pricing only (a rate card with `[meta]`).
pub const OPTIONAL_COLUMNS: [&str; 3] = [KIND, STATUS, CATEGORY];

pub const MESSAGE_ID: &str = "message_id";
pub const ACCOUNT_ID: &str = "account_id";
pub const CHANNEL: &str = "channel";
pub const BUSINESS_ID: &str = "business_id";
pub const USER_ID: &str = "user_id";
pub const DIRECTION: &str = "direction";
pub const TIMESTAMP: &str = "timestamp";
pub const KIND: &str = "kind";
pub const STATUS: &str = "status";
pub const CATEGORY: &str = "category";

/// The conversation key.
pub const KEY_COLUMNS: [&str; 4] = [ACCOUNT_ID, CHANNEL, BUSINESS_ID, USER_ID];

/// The order of events: by key, then time, inbound before outbound (direction codes are in
/// that order), then message id.
pub const EVENT_ORDER: [&str; 7] = [
    ACCOUNT_ID,
    CHANNEL,
    BUSINESS_ID,
    USER_ID,
    TIMESTAMP,
    DIRECTION,
    MESSAGE_ID,
];

/// One day in the nanoseconds convbill uses for every instant.
pub const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The integer code of an enumerated value. `UInt32` in frames: the narrower polars integer
/// types are not compiled in.
pub type Code = u32;

/// An enumerated input column: its accepted spellings and the code each one gets.
pub struct Enumeration {
    pub column: &'static str,
    pub values: &'static [(&'static str, Code)],
}

impl Enumeration {
    /// The accepted values, for hints: `a`, `b` or `c`.
    pub fn accepted(&self) -> String {
        let names: Vec<String> = self.values.iter().map(|(v, _)| format!("`{v}`")).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// The code of an accepted value, if it is one.
    pub fn code_of(&self, name: &str) -> Option<Code> {
        self.values
            .iter()
            .find(|(v, _)| *v == name)
            .map(|(_, code)| *code)
    }

    pub fn name_of(&self, code: Code) -> &'static str {
        self.values
            .iter()
            .find(|(_, c)| *c == code)
            .map(|(v, _)| *v)
            .expect("codes come from this table")
    }
}

pub const WHATSAPP: Code = 0;
pub const MESSENGER: Code = 1;
pub const INSTAGRAM: Code = 2;
pub const CHANNELS: Enumeration = Enumeration {
    column: CHANNEL,
    values: &[
        ("whatsapp", WHATSAPP),
        ("messenger", MESSENGER),
        ("instagram", INSTAGRAM),
    ],
};

pub const INBOUND: Code = 0;
pub const OUTBOUND: Code = 1;
pub const DIRECTIONS: Enumeration = Enumeration {
    column: DIRECTION,
    values: &[("inbound", INBOUND), ("outbound", OUTBOUND)],
};

/// `kind` codes. Inbound rows accept `message`, `cta_click`, `ad_click`; outbound rows accept
/// `message` and `template`. A null `kind` is `message`.
pub const KIND_MESSAGE: Code = 0;
pub const KIND_TEMPLATE: Code = 1;
pub const KIND_CTA_CLICK: Code = 2;
pub const KIND_AD_CLICK: Code = 3;
pub const KINDS: Enumeration = Enumeration {
    column: KIND,
    values: &[
        ("message", KIND_MESSAGE),
        ("template", KIND_TEMPLATE),
        ("cta_click", KIND_CTA_CLICK),
        ("ad_click", KIND_AD_CLICK),
    ],
};

/// `status` codes. A null `status` is `delivered`; only `failed` changes anything.
pub const STATUS_DELIVERED: Code = 0;
pub const STATUS_READ: Code = 1;
pub const STATUS_SENT: Code = 2;
pub const STATUS_FAILED: Code = 3;
pub const STATUSES: Enumeration = Enumeration {
    column: STATUS,
    values: &[
        ("delivered", STATUS_DELIVERED),
        ("read", STATUS_READ),
        ("sent", STATUS_SENT),
        ("failed", STATUS_FAILED),
    ],
};

/// `category` codes: a template's category, which Meta's pricing reads. A null `category`
/// (and, unless the rate card has `[meta]`, an unknown one) is [`CATEGORY_NONE`].
pub const CATEGORY_NONE: Code = 0;
pub const CATEGORY_MARKETING: Code = 1;
pub const CATEGORY_UTILITY: Code = 2;
pub const CATEGORY_AUTHENTICATION: Code = 3;
pub const CATEGORIES: Enumeration = Enumeration {
    column: CATEGORY,
    values: &[
        ("marketing", CATEGORY_MARKETING),
        ("utility", CATEGORY_UTILITY),
        ("authentication", CATEGORY_AUTHENTICATION),
    ],
};

/// Session initiation labels, as written to `sessions.parquet` and the invoices.
pub const USER_INITIATED: &str = "user_initiated";
pub const BUSINESS_INITIATED: &str = "business_initiated";
pub const STANDARD: &str = "standard";

/// Violation reasons, as written to `violations.parquet`.
pub const OUTSIDE_SERVICE_WINDOW: &str = "outside_service_window";
pub const OUTSIDE_STANDARD_WINDOW: &str = "outside_standard_window";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_values_read_as_a_list() {
        assert_eq!(
            CHANNELS.accepted(),
            "`whatsapp`, `messenger` or `instagram`"
        );
        assert_eq!(DIRECTIONS.accepted(), "`inbound` or `outbound`");
    }

    #[test]
    fn codes_map_back_to_names() {
        assert_eq!(KINDS.name_of(KIND_AD_CLICK), "ad_click");
        assert_eq!(STATUSES.name_of(STATUS_FAILED), "failed");
    }
}
