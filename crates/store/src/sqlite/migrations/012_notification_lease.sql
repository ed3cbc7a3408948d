-- The failure e-mail's right to send is a lease (NotificationClaimedUntil); NotificationSentDate is set once it went.
-- A sender that dies holding the lease leaves the e-mail to the next, whom the scheduler's stranded sweep queues.
ALTER TABLE DeviceBulkChange ADD COLUMN NotificationClaimedUntil TEXT;
