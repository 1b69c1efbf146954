//! Users and groups as the image names them: `USER[:GROUP]`, each a name or a number,
//! looked up in the image's own `/etc/passwd` and `/etc/group` (read inside its root).

use std::path::Path;

use crate::inroot::Rooted;

/// A small text file of the image (its /etc/passwd or /etc/group), read inside its
/// root: empty when missing, not a regular file, or unreadable; at most 1 MiB.
fn image_file(rootfs: &Path, path: &str) -> String {
    use std::io::Read as _;
    Rooted::new(rootfs, path)
        .blocking(|p| {
            let mut s = String::new();
            crate::inroot::open_regular(p)?
                .take(1 << 20)
                .read_to_string(&mut s)?;
            Ok::<_, std::io::Error>(s)
        })
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default()
}

/// A user name or uid in the image's /etc/passwd → (uid, gid).
pub fn lookup_user(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    // `USER[:GROUP]`, each a name or a number, as images and `docker run --user` say it.
    let (user, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary_gid) = if user.is_empty() || user == "root" {
        (0, 0)
    } else {
        let passwd = image_file(rootfs, "/etc/passwd");
        let found = passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && (f[0] == user || f[2] == user) {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        });
        match (found, user.parse::<u32>()) {
            (Some(ids), _) => ids,
            // A number the image does not list: Docker runs it with group 0.
            (None, Ok(uid)) => (uid, 0),
            (None, Err(_)) => {
                return Err(format!("user {user:?} is not in the image's /etc/passwd"))
            }
        }
    };
    let gid = match group {
        None | Some("") => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => image_file(rootfs, "/etc/group")
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                })
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_come_from_the_image() {
        let dir = std::env::temp_dir().join(format!("users-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nvcap:x:2000:2000::/home/vcap:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(lookup_user(&dir, "vcap"), Ok((2000, 2000)));
        assert_eq!(lookup_user(&dir, ""), Ok((0, 0)));
        std::fs::write(dir.join("etc/group"), "root:x:0:\nstaff:x:50:vcap\n").unwrap();
        assert_eq!(
            lookup_user(&dir, "1234"),
            Ok((1234, 0)),
            "unknown uid: group 0"
        );
        assert_eq!(lookup_user(&dir, "1000:1000"), Ok((1000, 1000)));
        assert_eq!(lookup_user(&dir, "vcap:staff"), Ok((2000, 50)));
        assert_eq!(lookup_user(&dir, "2000:"), Ok((2000, 2000)));
        assert!(lookup_user(&dir, "vcap:nogroup")
            .unwrap_err()
            .contains("/etc/group"));
        assert!(lookup_user(&dir, "nobody")
            .unwrap_err()
            .contains("/etc/passwd"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
