//! Who a component is, as its certificate names it: a [`Role`] and a name (a cell's
//! id, a brain's or router's name, `bbs` for the BBS). The cluster CA writes the
//! identity into every certificate it issues as the DNS name
//! `NAME.ROLE.lattice` ([`Identity::dns_name`]), so a client verifying a server
//! checks that name with ordinary hostname verification, and a server reads its
//! peer's identity back with [`Identity::from_dns_name`]. Pure: no crypto here.

use std::fmt;
use std::str::FromStr;

/// The DNS suffix every identity name ends in.
pub const IDENTITY_DOMAIN: &str = "lattice";

/// What a component is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The BBS (the state store's API).
    Bbs,
    /// A brain (auctioneer, converger).
    Brain,
    /// A cell's rep.
    Cell,
    /// A router (reads routes).
    Router,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Bbs, Role::Brain, Role::Cell, Role::Router];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bbs => "bbs",
            Role::Brain => "brain",
            Role::Cell => "cell",
            Role::Router => "router",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use bbs, brain, cell or router")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A component's identity: its role and its name within the role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

/// Why a name cannot be an identity's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity name {0:?} must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    BadName(String),
    #[error("{0:?} is not an identity name: expected NAME.ROLE.lattice")]
    NotAnIdentity(String),
    #[error(transparent)]
    Role(#[from] UnknownRole),
}

impl Identity {
    /// `name` in `role`; the name must be one DNS label (lower case).
    pub fn new(role: Role, name: &str) -> Result<Identity, IdentityError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(IdentityError::BadName(name.to_string()));
        }
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }

    /// `NAME.ROLE.lattice`: the DNS name in the identity's certificate.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.{IDENTITY_DOMAIN}", self.name, self.role)
    }

    /// The identity a certificate's DNS name states.
    pub fn from_dns_name(dns: &str) -> Result<Identity, IdentityError> {
        let not = || IdentityError::NotAnIdentity(dns.to_string());
        let rest = dns
            .strip_suffix(IDENTITY_DOMAIN)
            .and_then(|r| r.strip_suffix('.'))
            .ok_or_else(not)?;
        let (name, role) = rest.rsplit_once('.').ok_or_else(not)?;
        Identity::new(role.parse()?, name)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips_through_its_dns_name() {
        let id = Identity::new(Role::Cell, "cell-a").unwrap();
        assert_eq!(id.dns_name(), "cell-a.cell.lattice");
        assert_eq!(
            Identity::from_dns_name("cell-a.cell.lattice"),
            Ok(id.clone())
        );
        assert_eq!(id.to_string(), "cell cell-a");
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(*r));
        }
    }

    #[test]
    fn names_and_dns_names_that_are_no_identity_are_refused() {
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"x".repeat(64)] {
            assert!(Identity::new(Role::Cell, bad).is_err(), "{bad:?}");
        }
        for bad in [
            "cell-a.cell",
            "cell-a.cell.example",
            "cell.lattice",
            "cell-a.king.lattice",
            "a.b.cell.lattice",
            "www.example.com",
        ] {
            assert!(Identity::from_dns_name(bad).is_err(), "{bad:?}");
        }
        let e = Identity::from_dns_name("x.king.lattice").unwrap_err();
        assert!(e.to_string().contains("bbs, brain, cell or router"), "{e}");
    }
}
