//! The seed loader's devices, 1,000 per request.

use super::*;

/// Devices a seed writes per request (one JSON document each).
pub(crate) const SEED_DEVICES_PER_REQUEST: usize = 1_000;

/// A seed's devices as `OPENJSON` reads them (texts as `json_text` writes them), `Seq` their order in the seed.
const SEED_DEVICES_JSON: &str = "OPENJSON(@P1) WITH (Seq INT '$.Seq', TenantId BIGINT '$.TenantId',
    ServiceProviderId BIGINT '$.ServiceProviderId', ICCID NVARCHAR(MAX) '$.ICCID', IMEI NVARCHAR(MAX) '$.IMEI',
    MSISDN NVARCHAR(MAX) '$.MSISDN', EID NVARCHAR(MAX) '$.EID', Status NVARCHAR(MAX) '$.Status',
    CarrierRatePlan NVARCHAR(MAX) '$.CarrierRatePlan', CommunicationPlan NVARCHAR(MAX) '$.CommunicationPlan',
    Username NVARCHAR(MAX) '$.Username', LastUsageDate DATETIME2 '$.LastUsageDate', DataUsageMB FLOAT '$.DataUsageMB',
    RevCustomerId NVARCHAR(MAX) '$.RevCustomerId') AS j";

impl MssqlStore {
    /// Writes seed devices in one request, in seed order (their Ids follow it); refuses the whole chunk, naming the
    /// first device whose provider (of its tenant) or status does not exist.
    pub(crate) async fn seed_devices(&self, devices: &[crate::seed::SeedDevice]) -> Result<(), StoreError> {
        let text = |t: Option<&str>| t.map(json_text);
        let json: Vec<serde_json::Value> = devices
            .iter()
            .enumerate()
            .map(|(seq, d)| {
                serde_json::json!({
                    "Seq": seq, "TenantId": d.tenant_id, "ServiceProviderId": d.service_provider_id,
                    "ICCID": json_text(&d.iccid), "IMEI": text(d.imei.as_deref()), "MSISDN": text(d.msisdn.as_deref()),
                    "EID": text(d.eid.as_deref()), "Status": json_text(&d.status),
                    "CarrierRatePlan": text(d.carrier_rate_plan.as_deref()),
                    "CommunicationPlan": text(d.communication_plan.as_deref()), "Username": text(d.username.as_deref()),
                    "LastUsageDate": d.last_usage().map(json_date), "DataUsageMB": d.data_usage_mb,
                    "RevCustomerId": text(d.rev_customer_id.as_deref()),
                })
            })
            .collect();
        let json = serde_json::Value::Array(json).to_string();
        let decoded =
            |c: &str| format!("CASE WHEN CHARINDEX(N'%', j.{c}) > 0 THEN dbo.fn_JsonText(j.{c}) ELSE j.{c} END");
        let status = decoded("Status");
        let check = format!(
            "SELECT TOP (1) j.Seq FROM {SEED_DEVICES_JSON}
             WHERE NOT EXISTS (SELECT 1 FROM dbo.ServiceProvider sp JOIN dbo.DeviceStatus s ON s.IntegrationId = sp.IntegrationId
                               AND (s.Status = {status} OR s.DisplayName = {status})
                               WHERE sp.Id = j.ServiceProviderId AND sp.TenantId = j.TenantId)
             ORDER BY j.Seq"
        );
        let mut q = Query::new(check);
        q.bind(json.as_str());
        if let Some(row) = self.first("check seed devices", q).await?.first() {
            let seq: i32 = need(row.get("Seq"), "Seq")?;
            let d = usize::try_from(seq).ok().and_then(|i| devices.get(i));
            return Err(StoreError::Seed(d.map_or_else(
                || format!("a device of the seed (#{seq}): its provider or status was not found"),
                |d| {
                    format!(
                        "device {}: provider {} of tenant {} or status '{}' not found",
                        d.iccid, d.service_provider_id, d.tenant_id, d.status
                    )
                },
            )));
        }
        let insert = format!(
            "INSERT INTO dbo.Device (TenantId, ServiceProviderId, ICCID, IMEI, MSISDN, EID, DeviceStatusId, CarrierRatePlan,
                                     CommunicationPlan, Username, LastUsageDate, DataUsageMB, RevCustomerId, ModifiedBy, ModifiedDate)
             SELECT j.TenantId, sp.Id, {iccid}, {imei}, {msisdn}, {eid}, s.Id, {plan}, {comm}, {user}, j.LastUsageDate,
                    j.DataUsageMB, {rev}, N'seed', SYSUTCDATETIME()
             FROM {SEED_DEVICES_JSON}
             JOIN dbo.ServiceProvider sp ON sp.Id = j.ServiceProviderId AND sp.TenantId = j.TenantId
             CROSS APPLY (SELECT TOP (1) Id FROM dbo.DeviceStatus WHERE IntegrationId = sp.IntegrationId
                          AND (Status = {status} OR DisplayName = {status}) ORDER BY Id) s
             ORDER BY j.Seq",
            iccid = decoded("ICCID"),
            imei = decoded("IMEI"),
            msisdn = decoded("MSISDN"),
            eid = decoded("EID"),
            plan = decoded("CarrierRatePlan"),
            comm = decoded("CommunicationPlan"),
            user = decoded("Username"),
            rev = decoded("RevCustomerId"),
        );
        let mut q = Query::new(insert);
        q.bind(json.as_str());
        self.exec("seed devices", q).await?;
        Ok(())
    }
}
