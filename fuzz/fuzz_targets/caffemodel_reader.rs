//! Arbitrary bytes as a .caffemodel / .solverstate / .binaryproto: decoding (and the legacy
//! upgrade) must return Ok or Err, never panic; whatever decodes must survive a write/read round
//! trip; whatever prost rejects must be located by the wire walker.
#![no_main]

use caffe_rs::format::caffemodel::{
    NET_PARAMETER, check_wire_format, decode_blob_proto_bytes, decode_net_bytes,
    decode_net_bytes_raw, decode_solver_state_bytes,
};
use caffe_rs::proto::NetParameter;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = decode_net_bytes(data, "fuzz.caffemodel");
    match decode_net_bytes_raw(data, "fuzz.caffemodel") {
        Ok(net) => {
            let bytes = net.encode_to_vec();
            let again = decode_net_bytes_raw(&bytes, "again.caffemodel");
            // Compare encodings: NaN payloads make the messages themselves != each other.
            let again = again.map(|n| n.encode_to_vec()).ok();
            assert!(bytes.is_empty() || again.as_deref() == Some(bytes.as_slice()));
        }
        Err(_) => {
            if !data.is_empty() && NetParameter::decode(data).is_err() {
                assert!(check_wire_format(data, NET_PARAMETER).is_err());
            }
        }
    }
    let _ = decode_solver_state_bytes(data, "fuzz.solverstate");
    let _ = decode_blob_proto_bytes(data, "fuzz.binaryproto");
});
