//! The device bulk change domain: identifiers, change types, statuses, the request model and the pure rules.
//! Knows nothing of HTTP, SQL, AWS or tokio.

pub mod exclusivity;
pub mod ids;
pub mod model;
pub mod request;
pub mod rollout;
pub mod rules;

pub use exclusivity::{DeviceAttribute, attributes_of, cancelled_by, conflict_reason};
pub use ids::{Iccid, IdError, Imei, Msisdn};
pub use model::{BulkStatus, ChangeType, Integration, PortalType, RowStatus, bulk_status_from_rows};
pub use request::{BulkChangeRequest, BulkChangeRequestWire, ChangeDetails, FieldError, RequestError};
