//! HTML output: the one escape helper every piece of text goes through, and a few builders.

use std::fmt::Write;

/// Escapes text for HTML element content and double-quoted attribute values: `&`, `<`, `>`,
/// `"` and `'` become character references, so stored text (a caller's note, a name) can never
/// open a tag or leave an attribute (OWASP XSS prevention cheat sheet, rule 1 and 2).
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

/// [`html_escape`] appending to `out`.
pub fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business on the page (and NUL is a parse error).
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            // A bidi override could make stored text read as something else.
            c if crate::practice::text::is_hidden_format(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// An HTML fragment under construction. Text only enters through [`Html::text`] (escaped);
/// markup through [`Html::raw`] with literals written in this module tree.
#[derive(Debug, Default)]
pub struct Html(String);

impl Html {
    /// An empty fragment.
    pub fn new() -> Html {
        Html(String::with_capacity(16 * 1024))
    }

    /// Appends markup written by the views themselves (never stored or request text).
    pub fn raw(&mut self, markup: &str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Appends escaped text.
    pub fn text(&mut self, text: &str) -> &mut Html {
        push_escaped(&mut self.0, text);
        self
    }

    /// Appends formatted markup from trusted parts (numbers, escaped strings).
    pub fn fmt(&mut self, args: std::fmt::Arguments<'_>) -> &mut Html {
        let _ = self.0.write_fmt(args);
        self
    }

    /// `<tag class="…">text</tag>` with escaped text.
    pub fn el(&mut self, tag: &str, class: &str, text: &str) -> &mut Html {
        if class.is_empty() {
            self.fmt(format_args!("<{tag}>"));
        } else {
            self.fmt(format_args!("<{tag} class=\"{class}\">"));
        }
        self.text(text).fmt(format_args!("</{tag}>"))
    }

    /// The finished markup.
    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_open_tags_or_leave_attributes() {
        let hostile = r#"<script>alert("x")</script>' onmouseover='a' & "b"#;
        let e = html_escape(hostile);
        assert_eq!(
            e,
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onmouseover=&#39;a&#39; \
             &amp; &quot;b"
        );
        for bad in ['<', '>', '"', '\''] {
            assert!(!e.contains(bad), "{bad} survived");
        }
    }

    #[test]
    fn plain_text_and_umlauts_pass_and_controls_are_replaced() {
        assert_eq!(html_escape("Müller, Jürgen"), "Müller, Jürgen");
        assert_eq!(html_escape("a\0b\u{1b}c"), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(html_escape(""), "");
    }

    #[test]
    fn builder_escapes_text_and_keeps_markup() {
        let mut h = Html::new();
        h.raw("<p>").text("<b>").raw("</p>").el("td", "x", "a&b");
        assert_eq!(h.finish(), "<p>&lt;b&gt;</p><td class=\"x\">a&amp;b</td>");
    }
}
