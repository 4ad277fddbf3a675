//! Which state saves are fsynced (issue 16, part 1): the `[daemon] durability` setting and
//! the one pure rule, [`save_fsync`], that [`super::StateStore::persist`] applies to every
//! save. Every save is atomic (temporary file and rename), so a reader never sees a torn
//! file and a crash of the process loses nothing: the page cache outlives the process.
//! fsync only buys surviving a *power loss*, and is paid only where a power loss would
//! cost more than one login (docs/CONFIGURATION.md "Durability" has the cost per provider).

use crate::fsutil::Fsync;

/// `[daemon] durability`: which state saves must survive a power loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `"refresh_tokens"` (default): only saves that hold a refresh token of a provider
    /// that rotates them, and the in-flight marker; a power loss costs at most one login.
    #[default]
    RefreshTokens,
    /// `"all"`: every state save is fsynced, as before issue 16.
    All,
}

impl Durability {
    /// The words `durability` accepts, for messages.
    pub const CHOICES: &'static str = "\"refresh_tokens\" or \"all\"";

    /// Parses the setting's value; the error quotes it and says what was expected.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "refresh_tokens" => Ok(Durability::RefreshTokens),
            "all" => Ok(Durability::All),
            other => Err(format!(
                "{other:?} is not a durability: expected {}",
                Self::CHOICES
            )),
        }
    }
}

/// Whether a state save is fsynced (file, then directory) before it is reported done,
/// i.e. before the token it holds is used or published. Pure; tested as a table.
///
/// - `durability = "all"`: always.
/// - The in-flight marker (`refresh_in_flight`, saved before a rotating refresh token is
///   sent): always. A power loss that lost it would let tokend send a spent token again
///   (SPEC §4 "never reuses a spent one").
/// - A provider that rotates refresh tokens, with one held after this save: always. When
///   the token has just rotated this is SPEC §4's "persisted (fsync) before anything
///   else". When it has not, the save still replaces the only durable copy of a live
///   token, and an unsynced replacement is not safe everywhere: ext4 and btrfs flush a
///   file renamed over another, XFS does not, and after a power loss the file can be
///   empty. For a provider whose login sends the refresh token (OAuth2 `grant =
///   "refresh_token"`) that token cannot be had again by logging in. These extra saves
///   are rare (a restart's re-plan, a failed attempt): a rotating provider's exchanges
///   rotate the token and are durable anyway. So whether the token changed does not
///   decide, and is not an input.
/// - Everything else (no refresh token held, or one that never rotates): not fsynced. A
///   power loss costs at most one login: an access token that is still valid may be
///   fetched again, and a refresh token that was dropped was rejected or spent already
///   (then the durable in-flight marker of its last use comes back, and tokend logs in).
pub fn save_fsync(
    setting: Durability,
    rotates: bool,
    holds_refresh_token: bool,
    refresh_in_flight: bool,
) -> Fsync {
    let durable =
        setting == Durability::All || refresh_in_flight || (rotates && holds_refresh_token);
    if durable { Fsync::Durable } else { Fsync::Skip }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Durability::*;
    use Fsync::*;

    #[test]
    fn only_saves_a_power_loss_would_cost_more_than_a_login_are_fsynced() {
        // Proves the policy of issue 16 as a table over every input.
        #[rustfmt::skip]
        let cases: [(Durability, bool, bool, bool, Fsync, &str); 16] = [
            // setting, rotates, holds refresh token, in flight → fsync: why
            (RefreshTokens, false, false, false, Skip, "pontotel/funcional: a login restores it"),
            (RefreshTokens, false, true, false, Skip, "a refresh token that never rotates is never spent"),
            (RefreshTokens, true, false, false, Skip, "no refresh token held (dropped after a rejection)"),
            (RefreshTokens, true, true, false, Durable, "a rotated (or the only copy of a live) refresh token"),
            (RefreshTokens, false, false, true, Durable, "in-flight marker"),
            (RefreshTokens, false, true, true, Durable, "in-flight marker"),
            (RefreshTokens, true, false, true, Durable, "in-flight marker"),
            (RefreshTokens, true, true, true, Durable, "in-flight marker before a rotating refresh"),
            (All, false, false, false, Durable, "all"),
            (All, false, true, false, Durable, "all"),
            (All, true, false, false, Durable, "all"),
            (All, true, true, false, Durable, "all"),
            (All, false, false, true, Durable, "all"),
            (All, false, true, true, Durable, "all"),
            (All, true, false, true, Durable, "all"),
            (All, true, true, true, Durable, "all"),
        ];
        for (setting, rotates, holds, in_flight, expected, why) in cases {
            let got = save_fsync(setting, rotates, holds, in_flight);
            assert_eq!(
                got, expected,
                "{setting:?} rotates={rotates} holds={holds} in_flight={in_flight} ({why})"
            );
        }
    }

    #[test]
    fn the_setting_parses_its_two_words_and_names_them_otherwise() {
        // Proves the accepted values and the error text of `[daemon] durability`.
        assert_eq!(Durability::parse("refresh_tokens"), Ok(RefreshTokens));
        assert_eq!(Durability::parse("all"), Ok(All));
        assert_eq!(
            Durability::parse("ALL").unwrap_err(),
            "\"ALL\" is not a durability: expected \"refresh_tokens\" or \"all\""
        );
    }
}
