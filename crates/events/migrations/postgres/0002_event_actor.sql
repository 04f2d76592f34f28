-- Who issued the command behind an event (admin commands; the audit log reads it): a JSON
-- object {subject, issuer?, role, via}, NULL for the data plane's own events.
ALTER TABLE events ADD COLUMN actor TEXT;
