//! The storage suite: every story runs on SQLite, and on PostgreSQL when
//! `REACHLINE_TEST_DATABASE_URL` names a server (each test gets a fresh database there).

mod engine;
mod helpers;
mod ledger;
mod privacy;
mod selfservice;
mod server;
mod stories;

/// Declares one test per back end for each story function in `stories`.
macro_rules! on_both {
    ($($story:ident),+ $(,)?) => {$(
        mod $story {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h = crate::helpers::Harness::sqlite().await;
                crate::$story(&h).await;
                h.assert_no_orphans().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(h) = crate::helpers::Harness::postgres().await else { return };
                crate::$story(&h).await;
                h.assert_no_orphans().await;
                h.drop_database().await;
            }
        }
    )+};
}

use engine::*;
use ledger::*;
use privacy::*;
use selfservice::*;
use server::*;
use stories::*;

on_both!(
    import_round_trip,
    reimport_is_idempotent,
    changed_number_replaces_and_keeps_history,
    recycled_number_belongs_to_two_borrowers,
    dropped_import_writes_nothing,
    contact_events_through_the_api,
    consents_are_events,
    loan_cannot_change_borrower,
    no_plaintext_pii_at_rest,
    blind_index_needs_the_key,
    contacts_after_many_borrowers,
    disconnects_load_and_answer,
    ledger_appends_reopens_and_proves,
    ledger_audit_names_each_tampering,
    commitment_keys_die_with_the_data_key,
    ledger_start_repairs_what_a_crash_leaves,
    ledger_nodes_share_one_log,
    ledger_rows_move_into_bundles_byte_for_byte,
    outbox_leases_are_exclusive_and_expire,
    a_borrower_is_dispatched_by_one_node_at_a_time,
    receipts_are_matched_whichever_comes_first,
    webhook_receipts_are_recorded_with_their_replay_guards,
    plan_writes_are_idempotent_and_keep_history,
    a_wake_by_evidence_outlives_a_plan_read_before_it,
    tokens_access_log_and_webhook_sightings,
    the_dashboard_reads_what_happened,
    number_changes_are_versioned_and_applied_in_one_step,
    checks_steps_nonces_sessions_and_failures,
    plan_requests_keep_the_borrowers_words_sealed,
    preferences_are_kept_and_reach_the_engine_view,
    verification_receipts_are_evidence_not_strays,
    erasure_shreds_everything_that_could_reach_the_borrower,
    retention_purges_past_the_maximum_and_keeps_standing_consent,
);
