//! What the agent shares with the host-side tests that talk to it: the
//! test data stream and its checksum, so both ends compute the same
//! expected answer from one definition.

pub mod stream_check;
