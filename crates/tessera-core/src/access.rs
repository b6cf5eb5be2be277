//! Who a request is ([`Accountability`]) and what it may do globally: the admin and app flags
//! derived from the policies of its role tree and of the user, filtered by `ip_access`.

use std::net::IpAddr;

use tessera_store::{AccessRows, AccessTree, PolicyGrant, PolicyRow, Store, StoreResult};
use uuid::Uuid;

/// The identity and global rights of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accountability {
    pub user: Option<Uuid>,
    pub role: Option<Uuid>,
    /// The role tree, root first.
    pub roles: Vec<Uuid>,
    pub admin: bool,
    pub app: bool,
    /// Some applicable policy of the direct role enforces two-factor login.
    pub enforce_tfa: bool,
    /// The policies that apply from the request's IP, in Directus's order: the role tree's root
    /// first, the user's own last (the public policy for role-less and anonymous callers).
    pub policies: Vec<Uuid>,
    /// The session family when the caller authenticated with a session JWT.
    pub session: Option<Uuid>,
    pub ip: Option<IpAddr>,
}

/// Composes the access rows of a principal with direct role `role` into its tree: the roles
/// root first; their policies root first, each role's in access-row order, then the user's own.
/// A principal without a role gets the public policy in place of role policies.
pub fn compose(rows: AccessRows, role: Option<Uuid>) -> AccessTree {
    // Writes refuse to make a cycle; should one exist anyway (two parent changes racing, a
    // hand edit), the chain stops at its first repeat, so that nobody's access, the last-admin
    // guard included, fails on it.
    let mut rows = rows;
    if let Some(repeat) = (0..rows.chain.len()).find(|&i| rows.chain[..i].contains(&rows.chain[i]))
    {
        tracing::warn!(role = %rows.chain[repeat], "role parents form a cycle");
        rows.chain.truncate(repeat);
        rows.by_role.truncate(repeat);
    }
    let roles: Vec<Uuid> = rows.chain.iter().rev().copied().collect();
    let grant = |p: PolicyRow, direct: bool| PolicyGrant {
        id: p.id,
        admin_access: p.admin_access,
        app_access: p.app_access,
        enforce_tfa: p.enforce_tfa,
        ip_access: p.ip_access,
        on_direct_role: direct,
    };
    let mut policies = Vec::new();
    if roles.is_empty() {
        // A policy attached to nobody applies to everybody without a role, anonymous callers
        // included: it may grant permissions, never admin access (unlike Directus, where an
        // admin policy detached from its role would make every anonymous caller an admin).
        policies.extend(rows.public.into_iter().map(|p| PolicyGrant {
            admin_access: false,
            ..grant(p, false)
        }));
    } else {
        for (id, attached) in rows.chain.iter().zip(rows.by_role).rev() {
            let direct = Some(*id) == role;
            policies.extend(attached.into_iter().map(|p| grant(p, direct)));
        }
    }
    policies.extend(rows.of_user.into_iter().map(|p| grant(p, false)));
    AccessTree { roles, policies }
}

/// Reads and composes the access tree of a principal.
pub async fn tree(
    store: &dyn Store,
    role: Option<Uuid>,
    user: Option<Uuid>,
) -> StoreResult<AccessTree> {
    Ok(compose(store.access_rows(role, user).await?, role))
}

/// The flags a principal's policies grant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalAccess {
    pub admin: bool,
    pub app: bool,
    /// Some policy of the direct role enforces TFA.
    pub enforce_tfa: bool,
}

/// Whether a policy applies from `ip`. A policy restricted by `ip_access` still counts when
/// the IP is unknown, as in Directus.
fn applies(p: &PolicyGrant, ip: Option<IpAddr>) -> bool {
    match (&p.ip_access, ip) {
        (Some(list), Some(ip)) if !list.trim().is_empty() => ip_allowed(list, ip),
        _ => true,
    }
}

/// The policies of a tree that apply from `ip`, in order.
pub fn applicable(tree: &AccessTree, ip: Option<IpAddr>) -> Vec<Uuid> {
    tree.policies
        .iter()
        .filter(|p| applies(p, ip))
        .map(|p| p.id)
        .collect()
}

/// ORs the flags of every policy that applies from `ip`.
pub fn global_access(tree: &AccessTree, ip: Option<IpAddr>) -> GlobalAccess {
    let mut g = GlobalAccess::default();
    for p in &tree.policies {
        if !applies(p, ip) {
            continue;
        }
        g.admin |= p.admin_access;
        g.app |= p.app_access;
        g.enforce_tfa |= p.enforce_tfa && p.on_direct_role;
    }
    g.app |= g.admin;
    g
}

/// Whether `ip` matches a CSV list of addresses, CIDR blocks and `a-b` ranges.
pub fn ip_allowed(list: &str, ip: IpAddr) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| entry_matches(entry, ip))
}

fn entry_matches(entry: &str, ip: IpAddr) -> bool {
    if let Some((net, bits)) = entry.split_once('/') {
        let (Ok(net), Ok(bits)) = (net.trim().parse::<IpAddr>(), bits.trim().parse::<u32>()) else {
            return false;
        };
        return match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        };
    }
    if let Some((lo, hi)) = entry.split_once('-') {
        return match (lo.trim().parse::<IpAddr>(), hi.trim().parse::<IpAddr>()) {
            (Ok(lo), Ok(hi)) => lo <= ip && ip <= hi,
            _ => false,
        };
    }
    entry.parse::<IpAddr>().is_ok_and(|e| e == ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_store::{PolicyGrant, PolicyRow};

    fn grant(admin: bool, app: bool, ip: Option<&str>) -> PolicyGrant {
        PolicyGrant {
            id: Uuid::new_v4(),
            admin_access: admin,
            app_access: app,
            enforce_tfa: false,
            ip_access: ip.map(str::to_owned),
            on_direct_role: true,
        }
    }

    #[test]
    fn admin_implies_app_and_ip_filters() {
        let tree = AccessTree {
            roles: vec![],
            policies: vec![grant(true, false, Some("10.0.0.0/8"))],
        };
        let inside = global_access(&tree, Some("10.1.2.3".parse().unwrap()));
        assert!(inside.admin && inside.app);
        let outside = global_access(&tree, Some("192.168.1.1".parse().unwrap()));
        assert!(!outside.admin && !outside.app);
        assert!(global_access(&tree, None).admin);
    }

    #[test]
    fn a_policy_attached_to_nobody_never_grants_admin() {
        let admin = |id| PolicyRow {
            id,
            admin_access: true,
            app_access: true,
            enforce_tfa: false,
            ip_access: None,
        };
        let rows = AccessRows {
            chain: vec![],
            by_role: vec![],
            of_user: vec![],
            public: vec![admin(Uuid::new_v4())],
        };
        let g = global_access(&compose(rows, None), None);
        assert!(!g.admin);
        assert!(g.app);
    }

    #[test]
    fn ip_lists() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_allowed("127.0.0.1, 10.0.0.0/8", ip("10.9.9.9")));
        assert!(ip_allowed("192.168.0.1-192.168.0.9", ip("192.168.0.5")));
        assert!(!ip_allowed("192.168.0.1-192.168.0.9", ip("192.168.0.10")));
        assert!(ip_allowed("::1", ip("::1")));
        assert!(!ip_allowed("garbage", ip("::1")));
    }
}
