//! Logging (and, with the daemon, metrics and HTTP endpoints). Every log line about an
//! account carries an `account` field (journald: `ACCOUNT=`).

pub mod logging;
