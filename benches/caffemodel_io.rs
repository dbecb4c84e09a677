//! Throughput of `.caffemodel` writing and reading on a ~250 MB model (a few big blobs, like the
//! fully connected layers that dominate VGG/AlexNet files).
//!
//! `cargo bench --bench caffemodel_io` (needs `[[bench]] name = "caffemodel_io" harness = false`).
//! `CAFFEMODEL_BENCH_MB=500` changes the size.
// Without `harness = false` cargo builds this file as a libtest harness and `main` goes unused.
#![cfg_attr(test, allow(dead_code))]

use std::time::Instant;

use caffe_rs::format::caffemodel::{read_net_binary, write_net_binary};
use caffe_rs::proto::{BlobProto, LayerParameter, NetParameter};

fn big_net(megabytes: usize) -> NetParameter {
    let floats = megabytes * 1_000_000 / 4;
    // fc6/fc7/fc8-like blobs: half, a quarter and two eighths of the payload.
    let sizes = [floats / 2, floats / 4, floats / 8, floats / 8];
    let layer = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let rows = n / 1000;
            LayerParameter {
                name: Some(format!("fc{i}")),
                r#type: Some("InnerProduct".into()),
                blobs: vec![
                    BlobProto::from_shape_data(
                        &[rows, 1000],
                        (0..rows * 1000)
                            .map(|k| (k % 1999) as f32 * 1e-3 - 1.0)
                            .collect(),
                    ),
                    BlobProto::from_shape_data(&[rows], vec![0.5; rows]),
                ],
                ..Default::default()
            }
        })
        .collect();
    NetParameter {
        name: Some("bench".into()),
        layer,
        ..Default::default()
    }
}

fn main() {
    let mb: usize = std::env::var("CAFFEMODEL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let dir = std::env::temp_dir().join(format!("caffemodel_io_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    let path = dir.join("big.caffemodel");

    let net = big_net(mb);
    let t = Instant::now();
    write_net_binary(&path, &net).expect("write");
    let write_s = t.elapsed().as_secs_f64();
    let size_mb = std::fs::metadata(&path).expect("stat").len() as f64 / 1e6;
    println!(
        "write_net_binary: {size_mb:.0} MB in {write_s:.3} s = {:.0} MB/s (incl. fsync)",
        size_mb / write_s
    );
    drop(net);

    // The first read warms the page cache; report the best of the following ones.
    let mut times = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let read = read_net_binary(&path).expect("read");
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(read.layer.len(), 4);
    }
    let warm = &times[1..];
    let best = warm.iter().cloned().fold(f64::INFINITY, f64::min);
    let mean = warm.iter().sum::<f64>() / warm.len() as f64;
    println!(
        "read_net_binary:  {size_mb:.0} MB: best {best:.3} s = {:.0} MB/s, mean {mean:.3} s = {:.0} MB/s (warm)",
        size_mb / best,
        size_mb / mean
    );
    let _ = std::fs::remove_dir_all(&dir);
}
