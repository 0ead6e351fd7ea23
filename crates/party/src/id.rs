//! Task ids: 12 bytes laid out like a MongoDB ObjectId, written as 24 lowercase hex characters.
//!
//! Layout: 4 bytes of seconds since the Unix epoch (big endian), 5 random bytes chosen once per
//! process, and a 3-byte counter that starts at a random value. Ids are unique across processes
//! and machines and sort by creation second.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::TaskError;

/// The id of a task: 24 hex characters, unique across processes and machines, sortable by creation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId([u8; 12]);

fn process_random() -> &'static [u8; 5] {
    static RANDOM: OnceLock<[u8; 5]> = OnceLock::new();
    RANDOM.get_or_init(|| {
        let mut bytes = [0u8; 5];
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
        bytes
    })
}

fn counter() -> &'static AtomicU32 {
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    COUNTER.get_or_init(|| AtomicU32::new(fastrand::u32(..)))
}

impl TaskId {
    /// A new id for the given creation time (seconds since the Unix epoch are taken from it).
    pub fn generate(at: jiff::Timestamp) -> TaskId {
        let secs = at.as_second().clamp(0, u32::MAX as i64) as u32;
        let count = counter().fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&secs.to_be_bytes());
        bytes[4..9].copy_from_slice(process_random());
        bytes[9..].copy_from_slice(&count.to_be_bytes()[1..]);
        TaskId(bytes)
    }

    /// The id made of these 12 bytes (as [`TaskId::as_bytes`] gives them).
    pub fn from_bytes(bytes: [u8; 12]) -> TaskId {
        TaskId(bytes)
    }

    /// The raw 12 bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// The creation second encoded in the id.
    pub fn created_second(&self) -> i64 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as i64
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of 24 characters: ids are formatted for every row the stores touch.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 24];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        f.pad(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

impl FromStr for TaskId {
    type Err = TaskError;

    fn from_str(s: &str) -> Result<TaskId, TaskError> {
        let bad = || {
            TaskError::invalid(format!(
                "{} is not a task id: an id is 24 hexadecimal characters, as printed by `party add` or `party list`",
                crate::validate::quote(s)
            ))
        };
        // Hex digits only: `from_str_radix` would also take a `+` sign in a pair.
        if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0u8; 12];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(TaskId(bytes))
    }
}

impl serde::Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TaskId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TaskId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_hex_unique_and_sortable_by_second() {
        let t1 = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let t2 = jiff::Timestamp::from_second(1_700_000_001).unwrap();
        let a = TaskId::generate(t1);
        let b = TaskId::generate(t1);
        let c = TaskId::generate(t2);
        assert_ne!(a, b);
        assert!(a < c && b < c);
        let s = a.to_string();
        assert_eq!(s.len(), 24);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(s.parse::<TaskId>().unwrap(), a);
        assert_eq!(a.created_second(), 1_700_000_000);
    }

    #[test]
    fn bytes_text_debug_and_json_say_the_same_id() {
        let t = jiff::Timestamp::from_second(0x6543_2100).unwrap();
        let id = TaskId::generate(t);
        let text = id.to_string();
        let bytes = id.as_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text, hex);
        assert_eq!(&bytes[..4], &[0x65, 0x43, 0x21, 0x00]);
        assert_eq!(format!("{id:?}"), format!("TaskId({text})"));
        assert_eq!(
            format!("{id:>26}"),
            format!("  {text}"),
            "padding is honoured"
        );
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TaskId>("\"nope\"").is_err());
        let fixed: TaskId = "0123456789abcdefFEDCBA98".parse().unwrap();
        assert_eq!(
            fixed.as_bytes(),
            &[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98
            ]
        );
        assert_eq!(fixed.to_string(), "0123456789abcdeffedcba98");
    }

    #[test]
    fn the_middle_five_bytes_are_random_once_per_process_and_the_counter_moves() {
        let t = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let ids: Vec<TaskId> = (0..100).map(|_| TaskId::generate(t)).collect();
        let random = &ids[0].as_bytes()[4..9];
        assert!(ids.iter().all(|id| &id.as_bytes()[4..9] == random));
        // Chosen at random: a constant here would make ids of different processes collide.
        assert_ne!(random, [0u8; 5]);
        assert_ne!(random, [1u8; 5]);
        let counters: std::collections::HashSet<[u8; 3]> = ids
            .iter()
            .map(|id| id.as_bytes()[9..].try_into().unwrap())
            .collect();
        assert_eq!(
            counters.len(),
            100,
            "each id of a second has its own counter value"
        );
    }

    #[test]
    fn bad_ids_are_refused_with_a_message() {
        for bad in [
            "",
            "xyz",
            "0123456789abcdef0123456",
            "0123456789abcdef0123456g",
            "é123456789abcdef012345",
        ] {
            let err = bad.parse::<TaskId>().unwrap_err().to_string();
            assert!(err.contains("24 hexadecimal"), "{err}");
        }
    }
}
