//! Secrets kept out of what less trusted readers see: the credentials in URLs
//! (`scheme://USER:PASSWORD@host`), wherever they stand in a string. The BBS's viewer
//! redaction and the cell's failure reasons use the same rule.

/// What stands where a secret was.
pub const HIDDEN: &str = "[hidden]";

/// `s` with the user information of every `scheme://…@host` in it hidden; None when
/// there was none.
pub fn url_credentials(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(HIDDEN);
                out.push_str(&tail[at..authority_end]);
                changed = true;
            }
            None => out.push_str(&tail[..authority_end]),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `s` with the credentials of every URL in it hidden.
pub fn urls(s: &str) -> String {
    url_credentials(s).unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_credentials_are_left_alone() {
        for s in ["", "http://h:1/v1/blobs/x", "mail me@example.com", "a://b"] {
            assert_eq!(url_credentials(s), None, "{s}");
        }
    }

    #[test]
    fn credentials_are_hidden_wherever_they_stand() {
        assert_eq!(
            urls("download https://u:tok@h/x.tgz failed: error sending request for url (https://u:tok@h/x.tgz)"),
            "download https://[hidden]@h/x.tgz failed: error sending request for url (https://[hidden]@h/x.tgz)"
        );
        assert_eq!(
            urls("rest:https://lattice-task:s3cret@bbs:8889/v1/repos/v/"),
            "rest:https://[hidden]@bbs:8889/v1/repos/v/"
        );
        assert_eq!(urls("/srv/repo"), "/srv/repo");
    }
}
