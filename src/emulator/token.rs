//! Minting tokens and remembering which are valid: access tokens until they expire or are
//! revoked, refresh tokens until they are spent (rotation), expire or are revoked.
//!
//! Spent refresh tokens are kept (as long as an hour after their expiry) so that a reuse
//! is recognised and counted instead of passing as "unknown".
//!
//! Every token belongs to a family: a login starts one, and the tokens a refresh issues
//! join the family of the refresh token it spent. A provider with reuse detection (Zarv;
//! OAuth 2.0 Security BCP, RFC 9700 §4.14.2) answers a reused refresh token by revoking
//! the whole family ([`TokenStore::revoke_family_of`]), which is what makes a double
//! refresh by two tokend instances visible as dead tokens, not only as a counter.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;

use super::Provider;
use super::state::TokenFormat;

/// How long a dead token is remembered before [`TokenStore::prune`] forgets it.
const REMEMBER_AFTER_EXPIRY: Duration = Duration::from_secs(3600);

/// `n` random bytes from the thread's cryptographically secure generator.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A new token string. Every format carries at least 128 random bits.
pub(crate) fn mint(
    format: TokenFormat,
    provider: Provider,
    subject: &str,
    lifetime: u64,
) -> String {
    match format {
        TokenFormat::Jwt => jwt(provider, subject, lifetime),
        TokenFormat::Opaque { parts } => (0..parts.max(1))
            .map(|_| URL_SAFE_NO_PAD.encode(random_bytes(16)))
            .collect::<Vec<_>>()
            .join("."),
        TokenFormat::Passport => format!("def50200{}", hex::encode(random_bytes(48))),
    }
}

/// An unsigned-in-spirit JWT: the signature is random bytes (tokend reads `exp` without
/// verifying, see CRATES.md). `exp` is rounded down, so it never outlives the server's
/// own idea of the expiry.
fn jwt(provider: Provider, subject: &str, lifetime: u64) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"typ": "JWT", "alg": "HS256"});
    let payload = serde_json::json!({
        "iss": "tokend-emulator",
        "aud": provider.name(),
        "sub": subject,
        "iat": iat,
        "exp": iat + lifetime,
        "jti": hex::encode(random_bytes(16)),
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(random_bytes(32)),
    )
}

struct AccessEntry {
    provider: Provider,
    subject: String,
    expires_at: Instant,
    revoked: bool,
    family: Family,
}

/// The login a token descends from ([`TokenStore::new_family`]).
pub(crate) type Family = u64;

/// A refresh token as the store keeps it.
pub(crate) struct RefreshEntry {
    provider: Provider,
    subject: String,
    /// The access token issued with it: Passport revokes that one on refresh.
    paired_access: String,
    client_id: Option<String>,
    scope: Option<String>,
    expires_at: Instant,
    state: RefreshState,
    family: Family,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    Active,
    Spent,
    Revoked,
}

impl RefreshEntry {
    pub(crate) fn new(
        provider: Provider,
        subject: &str,
        paired_access: &str,
        client_id: Option<&str>,
        scope: Option<&str>,
        expires_at: Instant,
        family: Family,
    ) -> RefreshEntry {
        RefreshEntry {
            provider,
            subject: subject.to_owned(),
            paired_access: paired_access.to_owned(),
            client_id: client_id.map(str::to_owned),
            scope: scope.map(str::to_owned),
            expires_at,
            state: RefreshState::Active,
            family,
        }
    }
}

/// What a successfully redeemed refresh token carried.
#[derive(Debug)]
pub(crate) struct Redeemed {
    pub(crate) subject: String,
    pub(crate) scope: Option<String>,
    /// The family the new tokens join.
    pub(crate) family: Family,
}

/// Why a refresh token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Never issued here, or issued for another provider, or forgotten.
    Unknown,
    /// Already exchanged once: a reuse, which the statistics count.
    Spent,
    /// Past its lifetime.
    Expired,
    /// Revoked with `revoke_all`.
    Revoked,
    /// Issued to another OAuth2 client.
    WrongClient,
    /// OAuth2: asks for a scope the original grant did not have (RFC 6749 §6).
    ScopeExceeded,
}

/// Whether every space-separated token of `requested` is in `granted` (RFC 6749 §3.3).
fn scope_within(requested: &str, granted: Option<&str>) -> bool {
    let granted: Vec<&str> = granted.unwrap_or("").split(' ').collect();
    requested.split(' ').all(|s| granted.contains(&s))
}

/// All tokens issued by one emulator.
#[derive(Default)]
pub(crate) struct TokenStore {
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    /// The last family handed out by [`TokenStore::new_family`].
    last_family: Family,
    /// Families revoked for a reuse, so each is counted once.
    revoked_families: HashSet<Family>,
}

impl TokenStore {
    /// A family for the tokens of a new login.
    pub(crate) fn new_family(&mut self) -> Family {
        self.last_family += 1;
        self.last_family
    }

    pub(crate) fn insert_access(
        &mut self,
        provider: Provider,
        token: &str,
        subject: &str,
        expires_at: Instant,
        family: Family,
    ) {
        self.access.insert(
            token.to_owned(),
            AccessEntry {
                provider,
                subject: subject.to_owned(),
                expires_at,
                revoked: false,
                family,
            },
        );
    }

    pub(crate) fn insert_refresh(&mut self, token: &str, entry: RefreshEntry) {
        self.refresh.insert(token.to_owned(), entry);
    }

    /// The subject of a valid access token and its remaining lifetime.
    pub(crate) fn access_subject(
        &self,
        provider: Provider,
        token: &str,
        now: Instant,
    ) -> Option<(String, Duration)> {
        let entry = self.access.get(token)?;
        (entry.provider == provider && !entry.revoked && now < entry.expires_at)
            .then(|| (entry.subject.clone(), entry.expires_at - now))
    }

    /// Expiry and revocation of an access token issued for `provider`, valid or not;
    /// `None` when it was never issued here or has been forgotten.
    pub(crate) fn access_info(&self, provider: Provider, token: &str) -> Option<(Instant, bool)> {
        let entry = self.access.get(token)?;
        (entry.provider == provider).then_some((entry.expires_at, entry.revoked))
    }

    /// Spends a refresh token (rotation): it is never accepted again. A `requested_scope`
    /// must lie within the original one; checks come first, so a refused token stays
    /// usable. With `revoke_paired_access`, the access token issued with it dies too
    /// (Passport).
    pub(crate) fn redeem(
        &mut self,
        provider: Provider,
        token: &str,
        client_id: Option<&str>,
        requested_scope: Option<&str>,
        revoke_paired_access: bool,
        now: Instant,
    ) -> Result<Redeemed, Refused> {
        let entry = match self.refresh.get_mut(token) {
            Some(entry) if entry.provider == provider => entry,
            _ => return Err(Refused::Unknown),
        };
        match entry.state {
            RefreshState::Spent => return Err(Refused::Spent),
            RefreshState::Revoked => return Err(Refused::Revoked),
            RefreshState::Active => {}
        }
        if now >= entry.expires_at {
            return Err(Refused::Expired);
        }
        if entry.client_id.as_deref() != client_id {
            return Err(Refused::WrongClient);
        }
        if requested_scope.is_some_and(|s| !scope_within(s, entry.scope.as_deref())) {
            return Err(Refused::ScopeExceeded);
        }
        entry.state = RefreshState::Spent;
        let redeemed = Redeemed {
            subject: entry.subject.clone(),
            // §6: an omitted scope means the original one.
            scope: requested_scope
                .map(str::to_owned)
                .or_else(|| entry.scope.clone()),
            family: entry.family,
        };
        if revoke_paired_access {
            let paired = entry.paired_access.clone();
            if let Some(access) = self.access.get_mut(&paired) {
                access.revoked = true;
            }
        }
        Ok(redeemed)
    }

    /// Revokes every token of `provider`.
    pub(crate) fn revoke_all(&mut self, provider: Provider) {
        for entry in self.access.values_mut().filter(|e| e.provider == provider) {
            entry.revoked = true;
        }
        for entry in self.refresh.values_mut().filter(|e| e.provider == provider) {
            if entry.state == RefreshState::Active {
                entry.state = RefreshState::Revoked;
            }
        }
    }

    /// Reuse detection: revokes every access and refresh token of the family `token` (a
    /// refresh token of `provider`) belongs to. Returns true the first time a family is
    /// revoked this way, so the caller counts families, not reuses.
    pub(crate) fn revoke_family_of(&mut self, provider: Provider, token: &str) -> bool {
        let Some(family) = self
            .refresh
            .get(token)
            .filter(|e| e.provider == provider)
            .map(|e| e.family)
        else {
            return false;
        };
        for entry in self.access.values_mut().filter(|e| e.family == family) {
            entry.revoked = true;
        }
        for entry in self.refresh.values_mut().filter(|e| e.family == family) {
            if entry.state == RefreshState::Active {
                entry.state = RefreshState::Revoked;
            }
        }
        self.revoked_families.insert(family)
    }

    /// Forgets tokens an hour past expiry, so a long demo does not grow without bound.
    pub(crate) fn prune(&mut self, now: Instant) {
        let alive = |expires_at: Instant| now < expires_at + REMEMBER_AFTER_EXPIRY;
        self.access.retain(|_, e| alive(e.expires_at));
        self.refresh.retain(|_, e| alive(e.expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_payload_carries_exp_iat_sub() {
        let token = mint(TokenFormat::Jwt, Provider::Zarv, "demo", 7);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["sub"], "demo");
        assert_eq!(
            payload["exp"].as_u64().unwrap() - payload["iat"].as_u64().unwrap(),
            7
        );
    }

    #[test]
    fn access_info_reports_expiry_and_revocation_of_valid_and_dead_tokens() {
        let mut store = TokenStore::default();
        let now = Instant::now();
        store.insert_access(Provider::Zarv, "a1", "demo", now, 1);
        assert_eq!(store.access_info(Provider::Zarv, "a1"), Some((now, false)));
        assert_eq!(store.access_info(Provider::Hubsoft, "a1"), None);
        assert_eq!(store.access_info(Provider::Zarv, "never-issued"), None);
        store.revoke_all(Provider::Zarv);
        assert_eq!(store.access_info(Provider::Zarv, "a1"), Some((now, true)));
    }

    #[test]
    fn opaque_tokens_are_not_json() {
        let token = mint(
            TokenFormat::Opaque { parts: 3 },
            Provider::Itflex,
            "demo",
            7,
        );
        assert_eq!(token.split('.').count(), 3);
        let first = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        assert_eq!(first.len(), 16);
        assert!(serde_json::from_slice::<serde_json::Value>(&first).is_err());
    }

    #[test]
    fn refresh_token_is_spent_once_then_counted_as_reuse() {
        let mut store = TokenStore::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        store.insert_access(Provider::Hubsoft, "a1", "demo", later, 1);
        store.insert_refresh(
            "r1",
            RefreshEntry::new(Provider::Hubsoft, "demo", "a1", Some("c"), None, later, 1),
        );
        assert_eq!(
            store
                .redeem(Provider::Zarv, "r1", Some("c"), None, true, now)
                .unwrap_err(),
            Refused::Unknown
        );
        assert_eq!(
            store
                .redeem(Provider::Hubsoft, "r1", None, None, true, now)
                .unwrap_err(),
            Refused::WrongClient
        );
        assert!(store.access_subject(Provider::Hubsoft, "a1", now).is_some());
        store
            .redeem(Provider::Hubsoft, "r1", Some("c"), None, true, now)
            .unwrap();
        assert!(store.access_subject(Provider::Hubsoft, "a1", now).is_none());
        assert_eq!(
            store
                .redeem(Provider::Hubsoft, "r1", Some("c"), None, true, now)
                .unwrap_err(),
            Refused::Spent
        );
    }

    #[test]
    fn refresh_scope_must_lie_within_the_original_and_defaults_to_it() {
        let mut store = TokenStore::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let entry =
            |scope| RefreshEntry::new(Provider::Oauth2, "demo", "a", Some("c"), scope, later, 1);
        store.insert_refresh("r1", entry(Some("read write")));
        let refused = store.redeem(
            Provider::Oauth2,
            "r1",
            Some("c"),
            Some("read admin"),
            false,
            now,
        );
        assert_eq!(refused.unwrap_err(), Refused::ScopeExceeded);
        let narrowed = store.redeem(Provider::Oauth2, "r1", Some("c"), Some("read"), false, now);
        assert_eq!(narrowed.unwrap().scope.as_deref(), Some("read"));
        store.insert_refresh("r2", entry(Some("read write")));
        let same = store.redeem(Provider::Oauth2, "r2", Some("c"), None, false, now);
        assert_eq!(same.unwrap().scope.as_deref(), Some("read write"));
    }

    #[test]
    fn expired_and_revoked_refresh_tokens_are_refused() {
        let mut store = TokenStore::default();
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        store.insert_refresh(
            "r1",
            RefreshEntry::new(Provider::Zarv, "demo", "a", None, None, soon, 1),
        );
        store.insert_refresh(
            "r2",
            RefreshEntry::new(Provider::Zarv, "demo", "a", None, None, soon, 1),
        );
        store.revoke_all(Provider::Zarv);
        assert_eq!(
            store
                .redeem(Provider::Zarv, "r1", None, None, false, now)
                .unwrap_err(),
            Refused::Revoked
        );
        store.insert_refresh(
            "r3",
            RefreshEntry::new(Provider::Zarv, "demo", "a", None, None, soon, 1),
        );
        assert_eq!(
            store
                .redeem(Provider::Zarv, "r3", None, None, false, soon)
                .unwrap_err(),
            Refused::Expired
        );
    }

    #[test]
    fn a_reused_refresh_token_revokes_its_family_once_and_no_other() {
        let mut store = TokenStore::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        // Family 1: login (a1, r1), then a refresh spent r1 and issued (a2, r2).
        let one = store.new_family();
        store.insert_access(Provider::Zarv, "a1", "demo", later, one);
        store.insert_refresh(
            "r1",
            RefreshEntry::new(Provider::Zarv, "demo", "a1", None, None, later, one),
        );
        let grant = store
            .redeem(Provider::Zarv, "r1", None, None, false, now)
            .unwrap();
        assert_eq!(grant.family, one, "a refresh keeps the family");
        store.insert_access(Provider::Zarv, "a2", "demo", later, grant.family);
        store.insert_refresh(
            "r2",
            RefreshEntry::new(
                Provider::Zarv,
                "demo",
                "a2",
                None,
                None,
                later,
                grant.family,
            ),
        );
        // Family 2: another login, untouched by family 1's fate.
        let two = store.new_family();
        assert_ne!(one, two);
        store.insert_access(Provider::Zarv, "b1", "demo", later, two);
        store.insert_refresh(
            "s1",
            RefreshEntry::new(Provider::Zarv, "demo", "b1", None, None, later, two),
        );

        assert_eq!(
            store
                .redeem(Provider::Zarv, "r1", None, None, false, now)
                .unwrap_err(),
            Refused::Spent
        );
        assert!(
            !store.revoke_family_of(Provider::Hubsoft, "r1"),
            "other provider"
        );
        assert!(store.revoke_family_of(Provider::Zarv, "r1"));
        assert!(
            !store.revoke_family_of(Provider::Zarv, "r1"),
            "a family is revoked (and counted) once"
        );
        for access in ["a1", "a2"] {
            assert!(store.access_subject(Provider::Zarv, access, now).is_none());
        }
        assert_eq!(
            store
                .redeem(Provider::Zarv, "r2", None, None, false, now)
                .unwrap_err(),
            Refused::Revoked,
            "the descendant refresh token dies with its family"
        );
        assert!(store.access_subject(Provider::Zarv, "b1", now).is_some());
        assert!(
            store
                .redeem(Provider::Zarv, "s1", None, None, false, now)
                .is_ok()
        );
    }
}
