//! Page tokens of the List RPCs, the same in every service: a request's `page_size` and
//! `page_token`, a response's `next_page_token` (empty on the last page).
//!
//! A token is opaque to callers (base64url of a versioned position: the last key a page
//! returned, or an offset into an index) and means nothing outside the list that issued it. A
//! token this code did not make is INVALID_ARGUMENT naming `page_token`, never a silent first
//! page.

use base64::Engine as _;

use crate::Error;

/// The most items one page holds, whatever `page_size` asks.
pub const MAX_PAGE_SIZE: usize = 500;

/// What a token holds, after this version tag.
const VERSION: &str = "p1:";

/// One page to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// At most this many items; `None` = all that are left.
    pub size: Option<usize>,
    /// Where the previous page ended (from its `next_page_token`); `None` = the start.
    pub after: Option<String>,
}

impl Page {
    /// A request's `page_size` and `page_token`: a size of 0 is `default` (`None` = all, what
    /// a list that was not paged before gives callers that do not ask for pages), any other is
    /// capped at `max`.
    pub fn parse(
        page_size: u32,
        page_token: &str,
        default: Option<usize>,
        max: usize,
    ) -> Result<Page, Error> {
        let size = match page_size {
            0 => default,
            n => Some(usize::try_from(n).unwrap_or(max).min(max)),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode(page_token)?)
        };
        Ok(Page { size, after })
    }

    /// Everything, from the start: what a request without `page_size` or `page_token` asks
    /// of a list that was not paged before.
    pub fn all() -> Page {
        Page {
            size: None,
            after: None,
        }
    }

    /// The page of `items`, which are sorted by `key` (ascending, one item per key), and the
    /// token of the next page. Keyed rather than counted, so an item added or removed
    /// between two pages neither hides nor repeats another.
    pub fn of_sorted<T>(&self, items: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let mut left = items
            .into_iter()
            .filter(|i| {
                self.after
                    .as_ref()
                    .is_none_or(|a| key(i).as_str() > a.as_str())
            })
            .peekable();
        let mut page = Vec::new();
        while let Some(i) = left.next_if(|_| self.size.is_none_or(|n| page.len() < n)) {
            page.push(i);
        }
        let next = match (left.peek(), page.last()) {
            (Some(_), Some(last)) => token(&key(last)),
            _ => String::new(),
        };
        (page, next)
    }

    /// Where to start in an index read by position (`after` as an offset; 0 at the start).
    pub fn offset(&self) -> Result<usize, Error> {
        match &self.after {
            None => Ok(0),
            Some(a) => a.parse().map_err(|_| not_ours()),
        }
    }
}

/// The token of a page that ended at `position` (a key, or an offset as text).
pub fn token(position: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{VERSION}{position}"))
}

fn decode(token: &str) -> Result<String, Error> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(VERSION).map(str::to_string))
        .ok_or_else(not_ours)
}

fn not_ours() -> Error {
    Error::InvalidArgument(
        "page_token: not a token this list issued (pass the previous page's \
         next_page_token, or none for the first page)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i:02}")).collect()
    }

    #[test]
    fn pages_cover_the_list_once_and_the_last_has_no_token() {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = Page::parse(3, &token, None, 100).unwrap();
            let (items, next) = page.of_sorted(names(8), String::clone);
            pages += 1;
            assert!(items.len() <= 3);
            seen.extend(items);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, names(8));
        assert_eq!(pages, 3);
        // A list that ends exactly at a page's end gives no empty page after it.
        let (items, next) = Page::parse(4, "", None, 100)
            .unwrap()
            .of_sorted(names(4), String::clone);
        assert_eq!((items.len(), next.as_str()), (4, ""));
    }

    #[test]
    fn no_page_size_is_the_default_and_sizes_are_capped() {
        let all = Page::parse(0, "", None, 10).unwrap();
        assert_eq!(all.of_sorted(names(30), String::clone).0.len(), 30);
        let capped = Page::parse(1000, "", None, 10).unwrap();
        assert_eq!(capped.size, Some(10));
        assert_eq!(Page::parse(0, "", Some(50), 500).unwrap().size, Some(50));
    }

    #[test]
    fn an_item_removed_between_pages_does_not_shift_the_next() {
        let (first, next) = Page::parse(2, "", None, 100)
            .unwrap()
            .of_sorted(names(5), String::clone);
        assert_eq!(first, vec!["n00", "n01"]);
        let mut fewer = names(5);
        fewer.remove(0);
        let (second, _) = Page::parse(2, &next, None, 100)
            .unwrap()
            .of_sorted(fewer, String::clone);
        assert_eq!(second, vec!["n02", "n03"]);
    }

    #[test]
    fn a_token_not_issued_here_is_refused_by_name() {
        for bad in ["garbage!", "bm90IG91cnM", "12"] {
            let e = Page::parse(2, bad, None, 10).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(e.to_string().contains("page_token: "), "{e}");
        }
        // A keyed token is not an offset.
        let keyed = Page::parse(2, &token("n03"), None, 10).unwrap();
        assert!(keyed.offset().is_err());
        assert_eq!(
            Page::parse(2, &token("40"), None, 10)
                .unwrap()
                .offset()
                .unwrap(),
            40
        );
    }
}
