//! Stored records read back from shared stores (file backend records and reservations, etcd
//! values): decoding untrusted bytes never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = lockrun::Resource::new("fuzz/resource") else {
        return;
    };
    lockrun::backend::file::fuzz_decode(data, &r);
    lockrun::backend::etcd::fuzz_decode(&r, data, 0x1234);
});
