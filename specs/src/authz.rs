//! Who may make which internal call: the BBS's gRPC calls and the rep's
//! (`Perform`, `State`, its HTTP routes), decided from the caller's
//! [`Identity`] (the one its client certificate names) and what the call
//! concerns (the cell whose work it touches). Pure: the servers read the
//! caller from the request and ask [`authorize`]; a [`Refusal`] names who asked
//! for what and why ("the certificate of cell cell-a may not claim work
//! (ClaimActualLRP) for cell cell-b: a cell acts only as itself").
//!
//! The rules: a request that came over plaintext loopback carries no identity
//! and is a trusted local caller ([`Caller::Local`]: in-process components,
//! tests); the BBS's own identity may do everything but give a rep work; reads
//! are open to every identity (a rep's logs and containers only to the BBS); a
//! cell writes only about itself (its presence, subnet, instances, tasks,
//! volumes); a brain or a cell keeps alive or revokes only the leases it holds
//! ([`authorize_lease`]); a brain holds the brain lock, converges, auctions and
//! places, and alone gives a rep work (`Perform`); writes to the desired state
//! come through the BBS's public API only. A TLS caller without a client
//! certificate ([`Caller::Anonymous`]) may only join the cluster.

use std::fmt;

use crate::identity::{Identity, Role};

/// Put into a request's extensions by a transport that accepted a TLS
/// connection without a client certificate (the BBS's port also serves nodes
/// that are joining): such a caller is [`Caller::Anonymous`], not local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoClientCertificate;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Plaintext over loopback: a component on this machine, trusted.
    Local,
    /// TLS without a client certificate: may only join.
    Anonymous,
    /// A peer whose client certificate names it.
    Peer(Identity),
}

impl Caller {
    /// The caller of a request whose extensions hold `identity` (set by the TLS
    /// transport from the client certificate) and, when it came over TLS without
    /// one, [`NoClientCertificate`].
    pub fn of(identity: Option<&Identity>, no_client_certificate: bool) -> Caller {
        match (identity, no_client_certificate) {
            (Some(id), _) => Caller::Peer(id.clone()),
            (None, true) => Caller::Anonymous,
            (None, false) => Caller::Local,
        }
    }

    /// The caller of a request with these extensions (a tonic request's, or an
    /// HTTP request's: the same type), where the TLS transport put the peer's
    /// [`Identity`] or [`NoClientCertificate`].
    #[cfg(feature = "grpc")]
    pub fn from_extensions(ext: &tonic::Extensions) -> Caller {
        Caller::of(
            ext.get::<Identity>(),
            ext.get::<NoClientCertificate>().is_some(),
        )
    }

    /// The metric label: the peer's role, `local` or `anonymous`.
    pub fn label(&self) -> &'static str {
        match self {
            Caller::Local => "local",
            Caller::Anonymous => "anonymous",
            Caller::Peer(id) => id.role.as_str(),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local => f.write_str("a local caller"),
            Caller::Anonymous => f.write_str("a caller without a client certificate"),
            Caller::Peer(id) => write!(f, "the certificate of {id}"),
        }
    }
}

/// Who may make a call (beyond local callers and the BBS, who may make every call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, even without a client certificate (joining the cluster).
    Anyone,
    /// Every identity (reads).
    AnyIdentity,
    /// A cell, about itself only (the call's cell id is its name).
    CellItself,
    /// A brain.
    Brain,
    /// A brain, and not even the BBS (giving a cell work).
    BrainAlone,
    /// A brain, or a cell about itself.
    BrainOrCellItself,
    /// A brain or a cell (leases their presence and lock hang on).
    BrainOrCell,
    /// A brain or the BBS (a rep's state).
    BrainOrBbs,
    /// The BBS only.
    Bbs,
    /// The BBS only: desired-state writes come through its public API.
    PublicApi,
}

macro_rules! calls {
    ($($variant:ident = $name:literal, $rule:ident, $what:literal;)*) => {
        /// An internal call: the BBS's gRPC calls, the rep's gRPC calls and HTTP routes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Call {
            $(
                #[doc = concat!("`", $name, "`: ", $what, ".")]
                $variant,
            )*
        }

        impl Call {
            /// Every call, in declaration order.
            pub const ALL: &'static [Call] = &[$(Call::$variant,)*];

            /// The call's name (the gRPC method, or the rep's HTTP route).
            pub fn name(self) -> &'static str {
                match self { $(Call::$variant => $name,)* }
            }

            /// Who may make it.
            pub fn rule(self) -> Rule {
                match self { $(Call::$variant => Rule::$rule,)* }
            }

            /// What it does, in words for a refusal.
            pub fn what(self) -> &'static str {
                match self { $(Call::$variant => $what,)* }
            }
        }
    };
}

calls! {
    // Joining (H6's join endpoint: the one call without a client certificate).
    Join = "Join", Anyone, "join the cluster";
    // Reads.
    Ping = "Ping", AnyIdentity, "ping";
    DesiredLrps = "DesiredLRPs", AnyIdentity, "read desired LRPs";
    DesiredLrpByProcessGuid = "DesiredLRPByProcessGuid", AnyIdentity, "read a desired LRP";
    ActualLrps = "ActualLRPs", AnyIdentity, "read actual LRPs";
    Tasks = "Tasks", AnyIdentity, "read tasks";
    TaskByGuid = "TaskByGuid", AnyIdentity, "read a task";
    Cells = "Cells", AnyIdentity, "read cells";
    Volumes = "Volumes", AnyIdentity, "read volumes";
    Schedules = "Schedules", AnyIdentity, "read schedules";
    Backups = "Backups", AnyIdentity, "read backups";
    Domains = "Domains", AnyIdentity, "read domains";
    SubscribeEvents = "SubscribeEvents", AnyIdentity, "subscribe to events";
    DesiredLrpGenerations = "DesiredLRPGenerations", AnyIdentity, "read an app's generations";
    // The desired state: the public API's.
    DesireLrp = "DesireLRP", PublicApi, "desire an LRP";
    UpdateDesiredLrp = "UpdateDesiredLRP", PublicApi, "update a desired LRP";
    RemoveDesiredLrp = "RemoveDesiredLRP", PublicApi, "remove a desired LRP";
    DesireTask = "DesireTask", PublicApi, "desire a task";
    CancelTask = "CancelTask", PublicApi, "cancel a task";
    UpsertDomain = "UpsertDomain", PublicApi, "set a domain";
    // A cell's own work.
    ClaimActualLrp = "ClaimActualLRP", CellItself, "claim work";
    StartActualLrp = "StartActualLRP", CellItself, "start work";
    CrashActualLrp = "CrashActualLRP", CellItself, "crash work";
    RemoveActualLrp = "RemoveActualLRP", CellItself, "remove work";
    EvacuateClaimedActualLrp = "EvacuateClaimedActualLRP", CellItself, "evacuate work";
    EvacuateRunningActualLrp = "EvacuateRunningActualLRP", CellItself, "evacuate work";
    EvacuateStoppedActualLrp = "EvacuateStoppedActualLRP", CellItself, "evacuate work";
    EvacuateCrashedActualLrp = "EvacuateCrashedActualLRP", CellItself, "evacuate work";
    StartTask = "StartTask", CellItself, "start a task";
    CompleteTask = "CompleteTask", CellItself, "complete a task";
    SetVolumeState = "SetVolumeState", CellItself, "report a volume";
    VolumeRemoved = "VolumeRemoved", CellItself, "report a volume removed";
    VolumeFenced = "VolumeFenced", CellItself, "report a fenced volume copy";
    SetCellPresence = "SetCellPresence", CellItself, "register a cell";
    LeaseCellSubnet = "LeaseCellSubnet", CellItself, "lease a cell's subnet";
    // Either.
    FailTask = "FailTask", BrainOrCellItself, "fail a task";
    GrantLease = "GrantLease", BrainOrCell, "grant a lease";
    KeepAliveLease = "KeepAliveLease", BrainOrCell, "keep a lease alive";
    RevokeLease = "RevokeLease", BrainOrCell, "revoke a lease";
    // The brain's.
    AcquireLock = "AcquireLock", Brain, "hold the brain lock";
    ReleaseLock = "ReleaseLock", Brain, "release the brain lock";
    FailActualLrp = "FailActualLRP", Brain, "fail an instance's placement";
    RetireActualLrp = "RetireActualLRP", Brain, "retire an instance";
    CreateActualLrp = "CreateActualLRP", Brain, "create an instance";
    UnclaimActualLrp = "UnclaimActualLRP", Brain, "unclaim an instance";
    SuspectActualLrp = "SuspectActualLRP", Brain, "suspect an instance";
    RemoveSuspectActualLrp = "RemoveSuspectActualLRP", Brain, "remove a suspect instance";
    RemoveEvacuatingActualLrp = "RemoveEvacuatingActualLRP", Brain, "remove an evacuating instance";
    RejectTask = "RejectTask", Brain, "reject a task";
    ResolvingTask = "ResolvingTask", Brain, "resolve a task";
    DeleteTask = "DeleteTask", Brain, "delete a task";
    PlaceVolume = "PlaceVolume", Brain, "place a volume";
    FailOverVolume = "FailOverVolume", Brain, "fail a volume over";
    TendStandby = "TendStandby", Brain, "tend a volume's standby copy";
    ClaimScheduleSlot = "ClaimScheduleSlot", Brain, "run a schedule's slot";
    DeleteBackup = "DeleteBackup", Brain, "delete a backup";
    ReplaceActualLrp = "ReplaceActualLRP", Brain, "replace an instance";
    DrainReplacedActualLrp = "DrainReplacedActualLRP", Brain, "drain a replaced instance";
    RemoveReplacedActualLrp = "RemoveReplacedActualLRP", Brain, "remove a replaced instance";
    RestoreReplacedActualLrp = "RestoreReplacedActualLRP", Brain, "restore a replaced instance";
    UpdateDeployment = "UpdateDeployment", Brain, "record a deployment's progress";
    RollbackDesiredLrp = "RollbackDesiredLRP", Brain, "roll an app back";
    // The rep's.
    Perform = "Perform", BrainAlone, "give a cell work";
    RepState = "State", BrainOrBbs, "read a cell's state";
    RepLogs = "/v1/logs", Bbs, "read a cell's logs";
    RepContainers = "/v1/containers", Bbs, "read a cell's containers";
    RepExec = "/v1/containers/exec", Bbs, "run a command in a container";
    RepForward = "/v1/containers/forward", Bbs, "forward a port into a container";
    RepMetrics = "/metrics", AnyIdentity, "read a cell's metrics";
    RepReady = "/readyz", AnyIdentity, "ask whether a cell is ready";
}

/// Why a call was refused: who asked for what, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{caller} may not {} ({}){}: {why}", call.what(), call.name(), about(concerning))]
pub struct Refusal {
    pub caller: Caller,
    pub call: Call,
    /// Whom the call concerned, in words ("for cell cell-b", "held by brain
    /// brain-1"), when it concerns someone.
    pub concerning: Option<String>,
    pub why: &'static str,
}

fn about(concerning: &Option<String>) -> String {
    match concerning {
        Some(c) => format!(" {c}"),
        None => String::new(),
    }
}

/// May `caller` make `call`, which concerns the cell `cell` (the instance
/// key's, the task's or the report's cell id; `None` when the call names none)?
pub fn authorize(caller: &Caller, call: Call, cell: Option<&str>) -> Result<(), Refusal> {
    let refuse = |why: &'static str| {
        Err(Refusal {
            caller: caller.clone(),
            call,
            concerning: cell.map(|c| format!("for cell {c}")),
            why,
        })
    };
    let rule = call.rule();
    let id = match caller {
        Caller::Local => return Ok(()),
        Caller::Anonymous if rule == Rule::Anyone => return Ok(()),
        Caller::Anonymous => {
            return refuse("without a client certificate only joining is allowed: present the certificate the cluster issued (--tls-cert, --tls-key) or join with --join and a token")
        }
        Caller::Peer(id) => id,
    };
    let (role, itself) = (id.role, cell == Some(id.name.as_str()));
    let allowed = match rule {
        Rule::Anyone | Rule::AnyIdentity => true,
        Rule::BrainAlone => role == Role::Brain,
        _ if role == Role::Bbs => true,
        Rule::Bbs | Rule::PublicApi => false,
        Rule::Brain | Rule::BrainOrBbs => role == Role::Brain,
        Rule::CellItself => role == Role::Cell && itself,
        Rule::BrainOrCellItself => role == Role::Brain || (role == Role::Cell && itself),
        Rule::BrainOrCell => matches!(role, Role::Brain | Role::Cell),
    };
    if allowed {
        return Ok(());
    }
    refuse(match (rule, id.role) {
        (Rule::CellItself | Rule::BrainOrCellItself, Role::Cell) if cell.is_none() => {
            "a cell must name itself in this call"
        }
        (Rule::CellItself | Rule::BrainOrCellItself, Role::Cell) => "a cell acts only as itself",
        (Rule::CellItself, _) => "only the cell itself may",
        (Rule::BrainOrCellItself, _) => "only a brain or the cell itself may",
        (Rule::Brain | Rule::BrainAlone, _) => "only a brain may",
        (Rule::BrainOrCell, _) => "only a brain or a cell may",
        (Rule::BrainOrBbs, _) => "only a brain or the BBS may",
        (Rule::PublicApi, _) => {
            "only the BBS may: desired state changes go through its public API (ltc)"
        }
        _ => "only the BBS may",
    })
}

/// May `caller` keep alive or revoke (`call`) a lease that `holder` holds
/// (`None`: no holder recorded, as for a lease a local caller granted, or one
/// gone)? Beyond [`authorize`]: a brain or a cell touches only its own leases,
/// so no one revokes another's presence or the brain's lock.
pub fn authorize_lease(
    caller: &Caller,
    call: Call,
    holder: Option<&Identity>,
) -> Result<(), Refusal> {
    authorize(caller, call, None)?;
    match (caller, holder) {
        (Caller::Peer(id), Some(h)) if id.role != Role::Bbs && id != h => Err(Refusal {
            caller: caller.clone(),
            call,
            concerning: Some(format!("held by {h}")),
            why: "a lease is only its holder's to keep alive or revoke",
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(role: Role, name: &str) -> Caller {
        Caller::Peer(Identity::new(role, name).unwrap())
    }

    /// Every rule against every kind of caller: (rule's sample call, caller,
    /// cell the call concerns, allowed).
    #[test]
    fn the_decision_table() {
        let cell_a = peer(Role::Cell, "cell-a");
        let brain = peer(Role::Brain, "brain-1");
        let router = peer(Role::Router, "router-1");
        let bbs = peer(Role::Bbs, "bbs");
        let anon = Caller::Anonymous;
        let local = Caller::Local;
        let (a, b) = (Some("cell-a"), Some("cell-b"));
        let table: &[(Call, &Caller, Option<&str>, bool)] = &[
            // Joining: anyone.
            (Call::Join, &anon, None, true),
            (Call::Join, &cell_a, None, true),
            // Reads: every identity, not an anonymous caller.
            (Call::DesiredLrps, &router, None, true),
            (Call::SubscribeEvents, &router, None, true),
            (Call::Cells, &cell_a, None, true),
            (Call::Ping, &brain, None, true),
            (Call::ActualLrps, &anon, None, false),
            (Call::Ping, &anon, None, false),
            // A cell's own work: only as itself.
            (Call::ClaimActualLrp, &cell_a, a, true),
            (Call::ClaimActualLrp, &cell_a, b, false),
            (Call::ClaimActualLrp, &cell_a, None, false),
            (Call::ClaimActualLrp, &brain, a, false),
            (Call::ClaimActualLrp, &router, a, false),
            (Call::ClaimActualLrp, &anon, a, false),
            (Call::ClaimActualLrp, &local, b, true),
            (Call::SetCellPresence, &cell_a, a, true),
            (Call::SetCellPresence, &cell_a, b, false),
            (Call::LeaseCellSubnet, &cell_a, b, false),
            (Call::CompleteTask, &cell_a, b, false),
            (Call::EvacuateRunningActualLrp, &cell_a, a, true),
            // Failing a task: a brain, or the task's cell.
            (Call::FailTask, &brain, None, true),
            (Call::FailTask, &cell_a, a, true),
            (Call::FailTask, &cell_a, b, false),
            (Call::FailTask, &router, a, false),
            // Leases: brains and cells.
            (Call::GrantLease, &cell_a, None, true),
            (Call::KeepAliveLease, &brain, None, true),
            (Call::RevokeLease, &router, None, false),
            // The brain's: the lock, convergence, the auction, placement.
            (Call::AcquireLock, &brain, None, true),
            (Call::AcquireLock, &cell_a, None, false),
            (Call::AcquireLock, &router, None, false),
            (Call::CreateActualLrp, &brain, None, true),
            (Call::UnclaimActualLrp, &cell_a, None, false),
            (Call::RejectTask, &cell_a, None, false),
            (Call::PlaceVolume, &brain, None, true),
            (Call::FailOverVolume, &brain, None, true),
            (Call::FailOverVolume, &cell_a, None, false),
            (Call::TendStandby, &brain, None, true),
            (Call::TendStandby, &cell_a, None, false),
            (Call::VolumeFenced, &cell_a, a, true),
            (Call::VolumeFenced, &cell_a, b, false),
            // Rolling updates: the brain's; the history is readable by all.
            (Call::ReplaceActualLrp, &brain, None, true),
            (Call::ReplaceActualLrp, &cell_a, None, false),
            (Call::DrainReplacedActualLrp, &router, None, false),
            (Call::RemoveReplacedActualLrp, &cell_a, a, false),
            (Call::RestoreReplacedActualLrp, &brain, None, true),
            (Call::UpdateDeployment, &cell_a, None, false),
            (Call::RollbackDesiredLrp, &router, None, false),
            (Call::RollbackDesiredLrp, &brain, None, true),
            (Call::DesiredLrpGenerations, &router, None, true),
            (Call::DesiredLrpGenerations, &cell_a, None, true),
            (Call::DesiredLrpGenerations, &anon, None, false),
            // The desired state: the BBS only.
            (Call::DesireLrp, &router, None, false),
            (Call::DesireLrp, &brain, None, false),
            (Call::DesireLrp, &cell_a, None, false),
            (Call::UpsertDomain, &bbs, None, true),
            // The rep.
            (Call::Perform, &brain, None, true),
            (Call::Perform, &local, None, true),
            (Call::Perform, &cell_a, None, false),
            (Call::Perform, &router, None, false),
            (Call::Perform, &bbs, None, false),
            (Call::RepState, &bbs, None, true),
            (Call::RepState, &brain, None, true),
            (Call::RepState, &cell_a, None, false),
            (Call::RepLogs, &bbs, None, true),
            (Call::RepLogs, &brain, None, false),
            (Call::RepContainers, &router, None, false),
            (Call::RepExec, &bbs, None, true),
            (Call::RepExec, &brain, None, false),
            (Call::RepForward, &bbs, None, true),
            (Call::RepForward, &router, None, false),
            (Call::RepMetrics, &router, None, true),
            (Call::RepReady, &anon, None, false),
        ];
        for (call, caller, cell, allowed) in table {
            let got = authorize(caller, *call, *cell);
            assert_eq!(got.is_ok(), *allowed, "{caller} {call:?} {cell:?}: {got:?}");
        }
    }

    #[test]
    fn a_lease_is_only_its_holders() {
        let cell_a = Identity::new(Role::Cell, "cell-a").unwrap();
        let brain = Identity::new(Role::Brain, "brain-1").unwrap();
        let (a, b) = (Caller::Peer(cell_a.clone()), Caller::Peer(brain.clone()));
        let table: &[(Call, &Caller, Option<&Identity>, bool)] = &[
            (Call::KeepAliveLease, &a, Some(&cell_a), true),
            (Call::RevokeLease, &a, Some(&cell_a), true),
            (Call::RevokeLease, &a, Some(&brain), false),
            (Call::KeepAliveLease, &a, Some(&brain), false),
            (Call::RevokeLease, &b, Some(&cell_a), false),
            (Call::RevokeLease, &b, Some(&brain), true),
            (Call::RevokeLease, &a, None, true),
            (Call::RevokeLease, &peer(Role::Router, "r"), None, false),
            (
                Call::RevokeLease,
                &peer(Role::Bbs, "bbs"),
                Some(&brain),
                true,
            ),
            (Call::RevokeLease, &Caller::Local, Some(&brain), true),
            (Call::RevokeLease, &Caller::Anonymous, None, false),
        ];
        for (call, caller, holder, allowed) in table {
            let got = authorize_lease(caller, *call, *holder);
            assert_eq!(
                got.is_ok(),
                *allowed,
                "{caller} {call:?} {holder:?}: {got:?}"
            );
        }
        let e = authorize_lease(&a, Call::RevokeLease, Some(&brain)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the certificate of cell cell-a may not revoke a lease (RevokeLease) held by brain brain-1: a lease is only its holder's to keep alive or revoke"
        );
    }

    #[test]
    fn local_callers_may_make_every_call_the_bbs_all_but_perform_and_anonymous_ones_only_join() {
        let bbs = peer(Role::Bbs, "bbs");
        for call in Call::ALL {
            for cell in [None, Some("cell-b")] {
                assert_eq!(authorize(&Caller::Local, *call, cell), Ok(()), "{call:?}");
                let by_bbs = authorize(&bbs, *call, cell);
                assert_eq!(by_bbs.is_ok(), *call != Call::Perform, "{call:?}");
                let anon = authorize(&Caller::Anonymous, *call, cell);
                assert_eq!(anon.is_ok(), *call == Call::Join, "{call:?}");
            }
        }
    }

    #[test]
    fn a_refusal_names_who_asked_for_what_and_why() {
        let e = authorize(
            &peer(Role::Cell, "cell-a"),
            Call::ClaimActualLrp,
            Some("cell-b"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the certificate of cell cell-a may not claim work (ClaimActualLRP) for cell cell-b: a cell acts only as itself"
        );
        let e = authorize(&peer(Role::Cell, "cell-a"), Call::AcquireLock, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the certificate of cell cell-a may not hold the brain lock (AcquireLock): only a brain may"
        );
        let e = authorize(&peer(Role::Router, "r"), Call::DesireLrp, None).unwrap_err();
        assert!(e.to_string().contains("public API"), "{e}");
        let e = authorize(&Caller::Anonymous, Call::Cells, None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("a caller without a client certificate may not read cells (Cells)"),
            "{e}"
        );
        assert!(e.to_string().contains("--join"), "{e}");
        let e = authorize(&peer(Role::Cell, "cell-a"), Call::RemoveActualLrp, None).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("a cell must name itself in this call"),
            "{e}"
        );
    }

    #[test]
    fn the_caller_is_its_identity_else_anonymous_over_tls_else_local() {
        let id = Identity::new(Role::Cell, "cell-a").unwrap();
        assert_eq!(Caller::of(Some(&id), false), Caller::Peer(id.clone()));
        assert_eq!(Caller::of(Some(&id), true), Caller::Peer(id));
        assert_eq!(Caller::of(None, true), Caller::Anonymous);
        assert_eq!(Caller::of(None, false), Caller::Local);
        assert_eq!(Caller::Anonymous.label(), "anonymous");
        assert_eq!(peer(Role::Brain, "b").label(), "brain");
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn the_caller_of_a_request_is_read_from_its_extensions() {
        let id = Identity::new(Role::Brain, "brain-1").unwrap();
        let mut ext = tonic::Extensions::new();
        assert_eq!(Caller::from_extensions(&ext), Caller::Local);
        ext.insert(NoClientCertificate);
        assert_eq!(Caller::from_extensions(&ext), Caller::Anonymous);
        ext.insert(id.clone());
        assert_eq!(Caller::from_extensions(&ext), Caller::Peer(id));
    }

    #[test]
    fn call_names_are_unique() {
        let mut names: Vec<_> = Call::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
