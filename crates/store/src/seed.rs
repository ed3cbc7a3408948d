//! The seed document: JSON that fills an empty database (format in the README; `events/seed.json` is the example).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub tenants: Vec<SeedTenant>,
    #[serde(default)]
    pub service_providers: Vec<SeedServiceProvider>,
    /// Extra `DeviceStatus` rows; the Control Center ones are built in.
    #[serde(default)]
    pub device_statuses: Vec<domain::rules::DeviceStatusDef>,
    #[serde(default)]
    pub carrier_rate_plans: Vec<SeedRatePlan>,
    #[serde(default)]
    pub rev_customers: Vec<SeedRevCustomer>,
    #[serde(default)]
    pub devices: Vec<SeedDevice>,
    #[serde(default)]
    pub customer_rate_plans: Vec<SeedCustomerPlan>,
    #[serde(default)]
    pub customer_rate_pools: Vec<SeedCustomerPlan>,
    /// Rev.io service lines already billing a device.
    #[serde(default)]
    pub rev_services: Vec<SeedRevService>,
    /// Telegence billing accounts (BANs) an account may open lines on: what the local simulator knows (the
    /// database keeps none; Telegence is asked).
    #[serde(default)]
    pub telegence_billing_accounts: Vec<SeedBillingAccount>,
    /// IMEI ranges of device models and the SIM they take (`IMEI_DeviceType_CarrierRatePlan`).
    #[serde(default)]
    pub imei_ranges: Vec<SeedImeiRange>,
}

/// A device model's IMEI range (`IMEI_DeviceType_CarrierRatePlan`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedImeiRange {
    pub manufacturer: String,
    pub model: String,
    #[serde(rename = "FromIMEI")]
    pub from_imei: String,
    #[serde(rename = "ToIMEI")]
    pub to_imei: String,
    #[serde(rename = "SIMType")]
    pub sim_type: String,
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// A Telegence billing account of a service provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedBillingAccount {
    pub service_provider_id: i64,
    pub billing_account_number: String,
    /// The foundation account (`businessAccount.fan`).
    #[serde(default)]
    pub foundation_account_number: Option<String>,
}

/// A tenant's customer rate plan or pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedCustomerPlan {
    pub id: i64,
    pub tenant_id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedRevService {
    pub tenant_id: i64,
    #[serde(rename = "ICCID")]
    pub iccid: String,
    pub rev_service_id: i64,
    pub rev_customer_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedTenant {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedServiceProvider {
    pub id: i64,
    pub tenant_id: i64,
    pub integration_id: i64,
    pub name: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub username: String,
    /// Control Center API key or Rev.io password.
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub client_code: Option<String>,
    #[serde(default)]
    pub subscription_key: Option<String>,
    #[serde(default = "yes")]
    pub write_is_enabled: bool,
    #[serde(default = "ten")]
    pub rate_limit_per_second: f64,
    /// Rev.io accounts: the provider a new service line gets when a request does not name one.
    #[serde(default)]
    pub default_provider_id: Option<i64>,
    /// ThingSpace accounts only.
    #[serde(default)]
    pub thing_space: Option<SeedThingSpace>,
    /// Teal and Pond accounts: the carrier's wire settings (README "Teal and Pond").
    #[serde(default)]
    pub carrier_settings: Option<serde_json::Value>,
}

/// A ThingSpace account's app credentials, account name and callback credentials (`ThingSpaceAuthentication`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedThingSpace {
    pub app_key: String,
    pub app_secret: String,
    pub account_name: String,
    pub callback_username: String,
    pub callback_password: String,
}

fn yes() -> bool {
    true
}
fn ten() -> f64 {
    10.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedRatePlan {
    pub id: i64,
    pub service_provider_id: i64,
    pub rate_plan_code: String,
    #[serde(rename = "PlanMB")]
    pub plan_mb: f64,
    pub base_rate: f64,
    /// Pond's package type id of the plan.
    #[serde(default)]
    pub jasper_rate_plan_id: Option<i64>,
    /// Teal's plan uuid.
    #[serde(default)]
    pub plan_uuid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedRevCustomer {
    pub tenant_id: i64,
    pub rev_customer_id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeedDevice {
    #[serde(default)]
    pub id: Option<i64>,
    pub tenant_id: i64,
    pub service_provider_id: i64,
    #[serde(rename = "ICCID")]
    pub iccid: String,
    #[serde(default, rename = "IMEI")]
    pub imei: Option<String>,
    #[serde(default, rename = "MSISDN")]
    pub msisdn: Option<String>,
    #[serde(default, rename = "EID")]
    pub eid: Option<String>,
    /// The carrier's status code (e.g. `ACTIVATION_READY`), resolved in the provider's integration.
    pub status: String,
    #[serde(default)]
    pub carrier_rate_plan: Option<String>,
    #[serde(default)]
    pub communication_plan: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub last_usage_date: Option<chrono::DateTime<chrono::Utc>>,
    /// `LastUsageDate` relative to when the seed is loaded (a sample that reads the same on any day).
    #[serde(default)]
    pub last_usage_days_ago: Option<i64>,
    #[serde(default, rename = "DataUsageMB")]
    pub data_usage_mb: f64,
    #[serde(default)]
    pub rev_customer_id: Option<String>,
}

impl SeedServiceProvider {
    /// A provider of `tenant_id` with no credentials, on a placeholder URL (a simulator's replaces it), writes
    /// enabled, 10 calls a second; set the rest with struct update syntax.
    pub fn new(id: i64, tenant_id: i64, integration_id: i64) -> Self {
        Self {
            id,
            tenant_id,
            integration_id,
            name: format!("provider {id}"),
            base_url: "http://127.0.0.1:9/unused".into(),
            username: String::new(),
            secret: String::new(),
            client_code: None,
            subscription_key: None,
            write_is_enabled: true,
            rate_limit_per_second: ten(),
            default_provider_id: None,
            carrier_settings: None,
            thing_space: None,
        }
    }
}

impl SeedRatePlan {
    /// A plan without the carrier's own ids (Pond's package type, Teal's plan uuid).
    pub fn new(
        id: i64,
        service_provider_id: i64,
        rate_plan_code: impl Into<String>,
        plan_mb: f64,
        base_rate: f64,
    ) -> Self {
        Self {
            id,
            service_provider_id,
            rate_plan_code: rate_plan_code.into(),
            plan_mb,
            base_rate,
            jasper_rate_plan_id: None,
            plan_uuid: None,
        }
    }
}

impl SeedDevice {
    /// A device in `status` with nothing else known (no IMEI, number, EID, plan, usage or customer).
    pub fn new(tenant_id: i64, service_provider_id: i64, iccid: impl Into<String>, status: impl Into<String>) -> Self {
        Self {
            id: None,
            tenant_id,
            service_provider_id,
            iccid: iccid.into(),
            imei: None,
            msisdn: None,
            eid: None,
            status: status.into(),
            carrier_rate_plan: None,
            communication_plan: None,
            username: None,
            last_usage_date: None,
            last_usage_days_ago: None,
            data_usage_mb: 0.0,
            rev_customer_id: None,
        }
    }

    /// When the device was last used: `LastUsageDaysAgo` before now, else `LastUsageDate`.
    pub fn last_usage(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.last_usage_days_ago {
            Some(days) => Some(chrono::Utc::now() - chrono::Duration::days(days)),
            None => self.last_usage_date,
        }
    }
}

impl Seed {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
