//! `error_text!`: `Display` and `Error` for errors whose every value has one fixed text.

/// `Display` (one fixed text per variant, or for the whole unit struct) and `Error`.
macro_rules! error_text {
    ($name:ident { $($variant:ident => $text:literal,)+ }) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)+
                })
            }
        }

        impl std::error::Error for $name {}
    };
    ($name:ident => $text:literal) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($text)
            }
        }

        impl std::error::Error for $name {}
    };
}
