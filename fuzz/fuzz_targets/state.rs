//! The state reader on arbitrary bytes (`state::decode`, the reader every
//! command uses through the stores): never a panic, and whatever it accepts
//! survives encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match karpctl::state::decode(data) {
        Ok(s) => {
            let text = karpctl::state::encode(&s).expect("a decoded state encodes");
            let again = karpctl::state::decode(text.as_bytes()).expect("an encoded state decodes");
            assert_eq!(again, s, "encode → decode changed the state");
        }
        Err(e) => {
            assert!(!e.to_string().trim().is_empty(), "an error without a message");
        }
    }
});
