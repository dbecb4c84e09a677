//! Caffe's DataTransformer: crop (random in TRAIN, centred in TEST), mirror (random when enabled),
//! mean subtraction (mean_file or mean_value) and scaling, in Caffe's order:
//! `out = (pixel - mean) * scale`, with the mean_file cropped at the same offsets as the image.
use anyhow::{Context, Result, bail, ensure};
use prost::Message;

use super::image::{ColorMode, Image};
use crate::proto::{BlobProto, Datum, Phase, TransformationParameter};
use crate::rng::Rng;

/// Pixels to transform, in one of the layouts Caffe feeds its transformer.
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    /// A raw Datum: uint8 channel planes (CHW).
    U8Chw(&'a [u8]),
    /// A Datum's float_data (CHW).
    F32Chw(&'a [f32]),
    /// A decoded image (cv::Mat): interleaved channels (HWC).
    U8Hwc(&'a [u8]),
}

/// One sample: its (channels, height, width) and pixels.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Pixels<'a>,
}

impl<'a> Sample<'a> {
    pub fn from_image(img: &'a Image) -> Self {
        Sample {
            channels: img.channels,
            height: img.height,
            width: img.width,
            pixels: Pixels::U8Hwc(&img.data),
        }
    }
}

/// A Datum ready to transform: borrowed raw pixels or a decoded image.
pub enum DatumPixels<'a> {
    Raw(Sample<'a>),
    Decoded(Image),
}

impl DatumPixels<'_> {
    pub fn sample(&self) -> Sample<'_> {
        match self {
            DatumPixels::Raw(s) => *s,
            DatumPixels::Decoded(img) => Sample::from_image(img),
        }
    }
}

/// Validates a Datum and decodes it when encoded (`mode` as Caffe picks it: native unless
/// force_color / force_gray).
pub fn datum_pixels(datum: &Datum, mode: ColorMode) -> Result<DatumPixels<'_>> {
    if datum.encoded() {
        let img = super::image::decode(datum.data(), mode).context("encoded Datum")?;
        return Ok(DatumPixels::Decoded(img));
    }
    let (c, h, w) = (datum.channels(), datum.height(), datum.width());
    ensure!(
        c > 0 && h > 0 && w > 0,
        "Datum has shape {c}x{h}x{w} (channels, height and width must be positive)"
    );
    let (c, h, w) = (c as usize, h as usize, w as usize);
    let n = c * h * w;
    let pixels = if !datum.data().is_empty() {
        ensure!(
            datum.data().len() == n,
            "Datum has {} bytes of data but channels*height*width = {c}*{h}*{w} = {n}",
            datum.data().len()
        );
        Pixels::U8Chw(datum.data())
    } else {
        ensure!(
            datum.float_data.len() == n,
            "Datum has {} float_data values but channels*height*width = {c}*{h}*{w} = {n}",
            datum.float_data.len()
        );
        Pixels::F32Chw(&datum.float_data)
    };
    Ok(DatumPixels::Raw(Sample {
        channels: c,
        height: h,
        width: w,
        pixels,
    }))
}

/// A mean image (mean_file) as [channels, height, width].
#[derive(Clone, Debug)]
pub struct MeanImage {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl MeanImage {
    /// Reads a binaryproto BlobProto (as written by compute_image_mean).
    pub fn read(path: &str) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read mean_file {path}"))?;
        let blob = BlobProto::decode(bytes.as_slice())
            .with_context(|| format!("mean_file {path} is not a BlobProto"))?;
        let dims = blob.dims();
        // Caffe reads channels/height/width with the legacy accessors (missing axes are 1).
        let legacy = |i: usize| dims.get(i).copied().unwrap_or(1);
        let (c, h, w) = (legacy(1), legacy(2), legacy(3));
        let data = blob.values_f32();
        ensure!(
            data.len() >= c * h * w && c * h * w > 0,
            "mean_file {path}: {} values for shape {:?}",
            data.len(),
            dims
        );
        Ok(MeanImage {
            channels: c,
            height: h,
            width: w,
            data: data[..c * h * w].to_vec(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct DataTransformer {
    scale: f32,
    mirror: bool,
    crop_size: usize,
    force_color: bool,
    force_gray: bool,
    mean: Option<std::sync::Arc<MeanImage>>,
    mean_values: Vec<f32>,
    phase: Phase,
    rng: Rng,
}

impl DataTransformer {
    /// Loads the mean_file (relative paths are relative to the working directory, as in Caffe).
    pub fn new(param: &TransformationParameter, phase: Phase) -> Result<Self> {
        ensure!(
            param.mean_file.is_none() || param.mean_value.is_empty(),
            "cannot specify mean_file and mean_value at the same time"
        );
        ensure!(
            !(param.force_color() && param.force_gray()),
            "cannot set both force_color and force_gray"
        );
        let mean = match &param.mean_file {
            Some(path) => Some(std::sync::Arc::new(MeanImage::read(path)?)),
            None => None,
        };
        Ok(DataTransformer {
            scale: param.scale(),
            mirror: param.mirror(),
            crop_size: param.crop_size() as usize,
            force_color: param.force_color(),
            force_gray: param.force_gray(),
            mean,
            mean_values: param.mean_value.clone(),
            phase,
            rng: Rng::new(0x5EED_DA7A),
        })
    }

    /// Seeds the random crops and mirrors (Caffe draws the seed from its global generator).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    pub fn crop_size(&self) -> usize {
        self.crop_size
    }

    /// How encoded Datums are decoded: native channels unless force_color / force_gray.
    pub fn color_mode(&self) -> ColorMode {
        if self.force_color {
            ColorMode::Color
        } else if self.force_gray {
            ColorMode::Gray
        } else {
            ColorMode::Native
        }
    }

    /// The [channels, height, width] a sample of this size becomes (Caffe's InferBlobShape).
    pub fn output_shape(&self, channels: usize, height: usize, width: usize) -> Result<[usize; 3]> {
        if self.crop_size > 0 {
            ensure!(
                height >= self.crop_size && width >= self.crop_size,
                "crop_size {} is larger than the {height}x{width} image",
                self.crop_size
            );
            Ok([channels, self.crop_size, self.crop_size])
        } else {
            Ok([channels, height, width])
        }
    }

    /// Transforms one sample into `out` (length channels * out_h * out_w), drawing the random
    /// mirror / crop from the transformer's own generator.
    pub fn transform(&mut self, s: &Sample, out: &mut [f32]) -> Result<()> {
        let mut rng = std::mem::replace(&mut self.rng, Rng::new(0));
        let r = self.transform_with(s, out, &mut rng);
        self.rng = rng;
        r
    }

    /// A seed for [`transform_with`](Self::transform_with) from the transformer's generator, so
    /// the samples of a batch can be transformed in parallel and still reproducibly.
    pub fn next_seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Like [`transform`](Self::transform) with the random draws taken from `rng`.
    pub fn transform_with(&self, s: &Sample, out: &mut [f32], rng: &mut Rng) -> Result<()> {
        let (c, h, w) = (s.channels, s.height, s.width);
        ensure!(c > 0, "sample has no channels");
        let [_, oh, ow] = self.output_shape(c, h, w)?;
        ensure!(
            out.len() == c * oh * ow,
            "output has {} values, expected {c}x{oh}x{ow}",
            out.len()
        );
        let expected = c * h * w;
        let got = match s.pixels {
            Pixels::U8Chw(d) | Pixels::U8Hwc(d) => d.len(),
            Pixels::F32Chw(d) => d.len(),
        };
        ensure!(
            got == expected,
            "sample has {got} values, expected {c}x{h}x{w} = {expected}"
        );
        if let Some(m) = &self.mean {
            ensure!(
                (m.channels, m.height, m.width) == (c, h, w),
                "mean_file has shape {}x{}x{} but the data is {c}x{h}x{w}",
                m.channels,
                m.height,
                m.width
            );
        }
        if !self.mean_values.is_empty() {
            ensure!(
                self.mean_values.len() == 1 || self.mean_values.len() == c,
                "specify either 1 mean_value or as many as channels: {c}"
            );
        }
        // Caffe's order of random draws: mirror first, then the crop offsets.
        let do_mirror = self.mirror && rng.below(2) == 1;
        let (h_off, w_off) = if self.crop_size > 0 {
            if self.phase == Phase::Train {
                let ho = rng.below(h - self.crop_size + 1);
                let wo = rng.below(w - self.crop_size + 1);
                (ho, wo)
            } else {
                ((h - self.crop_size) / 2, (w - self.crop_size) / 2)
            }
        } else {
            (0, 0)
        };
        let scale = self.scale;
        let mean = self.mean.as_ref().map(|m| m.data.as_slice());
        for ch in 0..c {
            let mv = match self.mean_values.len() {
                0 => 0.0,
                1 => self.mean_values[0],
                _ => self.mean_values[ch],
            };
            for y in 0..oh {
                let sy = y + h_off;
                let dst = &mut out[(ch * oh + y) * ow..(ch * oh + y + 1) * ow];
                let plane_row = (ch * h + sy) * w + w_off;
                let mrow = mean.map(|m| &m[plane_row..plane_row + ow]);
                match s.pixels {
                    Pixels::U8Chw(d) => fill_row(
                        dst,
                        &d[plane_row..plane_row + ow],
                        1,
                        mrow,
                        mv,
                        scale,
                        do_mirror,
                    ),
                    Pixels::F32Chw(d) => fill_row(
                        dst,
                        &d[plane_row..plane_row + ow],
                        1,
                        mrow,
                        mv,
                        scale,
                        do_mirror,
                    ),
                    Pixels::U8Hwc(d) => {
                        let start = (sy * w + w_off) * c + ch;
                        fill_row(
                            dst,
                            &d[start..start + (ow - 1) * c + 1],
                            c,
                            mrow,
                            mv,
                            scale,
                            do_mirror,
                        )
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes (when encoded) and transforms a Datum; the result shape is
    /// [`output_shape`](Self::output_shape) of the Datum's size.
    pub fn transform_datum(&mut self, datum: &Datum, out: &mut [f32]) -> Result<()> {
        let px = datum_pixels(datum, self.color_mode())?;
        self.transform(&px.sample(), out)
    }

    /// The output [channels, height, width] of a Datum.
    pub fn datum_shape(&self, datum: &Datum) -> Result<[usize; 3]> {
        let px = datum_pixels(datum, self.color_mode())?;
        let s = px.sample();
        self.output_shape(s.channels, s.height, s.width)
    }
}

/// Source pixel types the transformer reads.
trait Px: Copy {
    fn f(self) -> f32;
}
impl Px for u8 {
    fn f(self) -> f32 {
        self as f32
    }
}
impl Px for f32 {
    fn f(self) -> f32 {
        self
    }
}

/// One output row: `dst[x] = (src[x * stride] - mean) * scale`, mirrored when asked. The mean is
/// the mean_file row when given, else the channel's mean_value (0 without one: `x - 0.0` is exact,
/// so the result equals Caffe's `x * scale`).
fn fill_row<T: Px>(
    dst: &mut [f32],
    src: &[T],
    stride: usize,
    mrow: Option<&[f32]>,
    mv: f32,
    scale: f32,
    mirror: bool,
) {
    let px = src.iter().step_by(stride).map(|&v| v.f());
    match (mrow, mirror) {
        (Some(m), false) => dst
            .iter_mut()
            .zip(px.zip(m))
            .for_each(|(d, (v, &m))| *d = (v - m) * scale),
        (Some(m), true) => dst
            .iter_mut()
            .rev()
            .zip(px.zip(m))
            .for_each(|(d, (v, &m))| *d = (v - m) * scale),
        (None, false) => dst
            .iter_mut()
            .zip(px)
            .for_each(|(d, v)| *d = (v - mv) * scale),
        (None, true) => dst
            .iter_mut()
            .rev()
            .zip(px)
            .for_each(|(d, v)| *d = (v - mv) * scale),
    }
}

/// Fails unless the transform would accept a sample of this size (used at set-up).
pub fn check_mean_shape(
    t: &DataTransformer,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<()> {
    if let Some(m) = &t.mean
        && (m.channels, m.height, m.width) != (channels, height, width)
    {
        bail!(
            "mean_file has shape {}x{}x{} but the data is {channels}x{height}x{width}",
            m.channels,
            m.height,
            m.width
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(crop: u32, mirror: bool, scale: f32, mean_value: Vec<f32>) -> TransformationParameter {
        TransformationParameter {
            crop_size: Some(crop),
            mirror: Some(mirror),
            scale: Some(scale),
            mean_value,
            ..Default::default()
        }
    }

    #[test]
    fn centre_crop_mean_value_scale() {
        let mut t = DataTransformer::new(&param(2, false, 0.5, vec![1.0]), Phase::Test).unwrap();
        let data: Vec<u8> = (0..16).collect();
        let s = Sample {
            channels: 1,
            height: 4,
            width: 4,
            pixels: Pixels::U8Chw(&data),
        };
        let mut out = vec![0.0; 4];
        t.transform(&s, &mut out).unwrap();
        assert_eq!(out, vec![2.0, 2.5, 4.0, 4.5]);
    }

    #[test]
    fn hwc_matches_chw_and_mirror_flips() {
        let mut t = DataTransformer::new(&param(0, true, 1.0, vec![]), Phase::Train).unwrap();
        let hwc: Vec<u8> = vec![1, 10, 2, 20, 3, 30];
        let s = Sample {
            channels: 2,
            height: 1,
            width: 3,
            pixels: Pixels::U8Hwc(&hwc),
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut out = vec![0.0; 6];
            t.transform(&s, &mut out).unwrap();
            seen.insert(out.iter().map(|v| *v as i32).collect::<Vec<_>>());
        }
        let expect: std::collections::HashSet<Vec<i32>> =
            [vec![1, 2, 3, 10, 20, 30], vec![3, 2, 1, 30, 20, 10]]
                .into_iter()
                .collect();
        assert_eq!(seen, expect);
    }

    #[test]
    fn crop_too_big_is_an_error() {
        let t = DataTransformer::new(&param(5, false, 1.0, vec![]), Phase::Test).unwrap();
        let err = t.output_shape(3, 4, 8).unwrap_err().to_string();
        assert!(err.contains("crop_size 5"), "{err}");
    }
}
