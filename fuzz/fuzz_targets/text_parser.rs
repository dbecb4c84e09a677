//! Arbitrary UTF-8 as prototxt: the text parser and the transcoder (with the legacy upgrade on
//! top) must return Ok or Err, never panic.
#![no_main]

use caffe_rs::format::{text, transcode, upgrade};
use caffe_rs::proto::{NetParameter, SolverParameter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let _ = text::parse(src);
    if let Ok(mut net) =
        transcode::parse_text::<NetParameter>(src, "fuzz.prototxt", "caffe.NetParameter")
    {
        let _ = upgrade::upgrade_net(&mut net);
    }
    if let Ok(mut solver) =
        transcode::parse_text::<SolverParameter>(src, "fuzz.prototxt", "caffe.SolverParameter")
    {
        let _ = upgrade::upgrade_solver(&mut solver);
    }
});
