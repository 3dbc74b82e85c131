//! Scenarios: every parameter of the simulator design, with the built-in parameter sets.

use serde::{Deserialize, Serialize};

/// Every parameter of a run. Rates are per attempt unless named per year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// `cn` or `us`: the contact-rule profile and the freeze before a number is reassigned.
    pub jurisdiction: String,
    /// IANA zone of the borrowers.
    pub zone: String,
    pub yearly_abandon_hazard: f64,
    pub abandon_multiplier_30dpd: f64,
    pub tells_new_number: f64,
    pub freeze_days: u32,
    pub wrong_number_reply: f64,
    pub recycle_check_coverage: f64,
    pub recycle_check_lag_days: u32,
    pub sms_delivered: f64,
    pub sms_transient: f64,
    pub sms_read: f64,
    /// Given read: the borrower replies or clicks (engagement the lender sees).
    pub engage_given_read: f64,
    pub has_email: f64,
    pub email_delivered: f64,
    pub email_opened: f64,
    pub yearly_email_decay: f64,
    pub push_opted_in: f64,
    pub push_opened: f64,
    pub on_time_rate: f64,
    pub first_reminder_cut: f64,
    pub repeat_factor: f64,
    pub cure_uplift: f64,
    /// Daily chance a late installment is paid without any reminder.
    pub daily_cure: f64,
    pub installment_minor: i64,
    /// How much likelier a borrower reads a message at their most active hour than at their
    /// least active one (each borrower has one peak hour, drawn from the zone's day).
    #[serde(default = "default_peak_to_trough")]
    pub activity_peak_to_trough: f64,
}

fn default_peak_to_trough() -> f64 {
    2.0
}

impl Scenario {
    pub fn builtin(name: &str) -> Option<Self> {
        let cn = Scenario {
            name: "cn-mainstream".into(),
            jurisdiction: "cn".into(),
            zone: "Asia/Shanghai".into(),
            yearly_abandon_hazard: 0.05,
            abandon_multiplier_30dpd: 2.0,
            tells_new_number: 0.30,
            freeze_days: 90,
            wrong_number_reply: 0.15,
            recycle_check_coverage: 0.90,
            recycle_check_lag_days: 7,
            sms_delivered: 0.96,
            sms_transient: 0.02,
            sms_read: 0.80,
            engage_given_read: 0.30,
            has_email: 0.6,
            email_delivered: 0.97,
            email_opened: 0.22,
            yearly_email_decay: 0.10,
            push_opted_in: 0.60,
            push_opened: 0.12,
            on_time_rate: 0.88,
            first_reminder_cut: 0.20,
            repeat_factor: 0.3,
            cure_uplift: 0.03,
            daily_cure: 0.04,
            installment_minor: 150_000,
            activity_peak_to_trough: 2.0,
        };
        Some(match name {
            "cn-mainstream" => cn,
            "cn-subprime" => Scenario {
                name: name.into(),
                yearly_abandon_hazard: 0.15,
                on_time_rate: 0.78,
                ..cn
            },
            "us-prime" => Scenario {
                name: name.into(),
                jurisdiction: "us".into(),
                zone: "America/New_York".into(),
                yearly_abandon_hazard: 0.04,
                freeze_days: 45,
                has_email: 0.9,
                on_time_rate: 0.94,
                installment_minor: 40_000,
                ..cn
            },
            "em-prepaid" => Scenario {
                name: name.into(),
                zone: "Asia/Jakarta".into(),
                yearly_abandon_hazard: 0.40,
                freeze_days: 60,
                has_email: 0.3,
                push_opted_in: 0.5,
                on_time_rate: 0.75,
                installment_minor: 50_000,
                ..cn
            },
            _ => return None,
        })
    }

    pub const BUILTIN: [&'static str; 4] = ["cn-mainstream", "cn-subprime", "us-prime", "em-prepaid"];
}
