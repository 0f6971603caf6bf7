//! The original's rules for one string of the blob: CR and CRLF become
//! LF, LF becomes `<br/>`, a tab two spaces, and any other character of
//! Unicode's general category C a space.

/// True for characters in Unicode's general category C (control, format,
/// private use, and the noncharacters of the unassigned ones).
pub(super) fn is_other(c: char) -> bool {
    let u = c as u32;
    matches!(u,
        0x00..=0x1F | 0x7F..=0x9F
        // Cf (format)
        | 0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        // Co (private use)
        | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD
        // Cn noncharacters
        | 0xFDD0..=0xFDEF)
        || (u & 0xFFFE) == 0xFFFE
}

/// A string value as the original sanitizes it.
pub(super) fn sanitize_str(s: &str) -> String {
    let s = s.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "<br/>").replace('\t', "  ");
    s.chars().map(|c| if is_other(c) { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_like_the_original() {
        assert_eq!(sanitize_str("a\r\nb\tc\u{1}d\u{200b}"), "a<br/>b  c d ");
        assert!(is_other('\u{feff}') && is_other('\u{e000}') && !is_other('é'));
    }
}
