//! Images as Caffe's OpenCV pipeline sees them: decoded to interleaved BGR (or one grey channel),
//! resized with OpenCV's INTER_LINEAR arithmetic, re-encoded for `convert_imageset -encode_type`.
//!
//! Only JPEG and PNG are read (the formats datasets use in practice); anything else is an error that
//! says so.
use anyhow::{Context, Result, bail, ensure};

/// An 8-bit image in OpenCV's layout: rows of interleaved channels, BGR order for colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    /// 1 (grey) or 3 (BGR).
    pub channels: usize,
    /// `height * width * channels` bytes, row-major, channels interleaved.
    pub data: Vec<u8>,
}

/// How to decode, as OpenCV's imread/imdecode flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorMode {
    /// IMREAD_ANYCOLOR: grey images stay one channel, colour images become BGR.
    Native,
    /// IMREAD_COLOR: always three channels (BGR).
    Color,
    /// IMREAD_GRAYSCALE: always one channel.
    Gray,
}

impl ColorMode {
    pub fn from_is_color(is_color: bool) -> Self {
        if is_color {
            ColorMode::Color
        } else {
            ColorMode::Gray
        }
    }
}

impl Image {
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<u8>) -> Result<Self> {
        ensure!(
            data.len() == height * width * channels,
            "image buffer has {} bytes, expected {height}x{width}x{channels}",
            data.len()
        );
        Ok(Image {
            height,
            width,
            channels,
            data,
        })
    }

    /// Pixel data in Caffe's Datum order (channel planes, CHW), as `CVMatToDatum` writes it.
    pub fn to_chw(&self) -> Vec<u8> {
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut out = vec![0u8; h * w * c];
        for (i, px) in self.data.chunks_exact(c).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * h * w + i] = v;
            }
        }
        out
    }
}

/// The container format recognised from the first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
}

pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        Some(Format::Jpeg)
    } else {
        None
    }
}

/// Decodes a JPEG or PNG held in memory (OpenCV's `imdecode`).
pub fn decode(bytes: &[u8], mode: ColorMode) -> Result<Image> {
    match sniff(bytes) {
        Some(Format::Png) => decode_png(bytes, mode).context("cannot decode PNG"),
        Some(Format::Jpeg) => decode_jpeg(bytes, mode).context("cannot decode JPEG"),
        None if bytes.is_empty() => bail!("empty image data"),
        None => bail!("not a JPEG or PNG image (only these two formats are supported)"),
    }
}

/// Reads and decodes an image file (OpenCV's `imread`); errors name the file.
pub fn read_image(path: &str, mode: ColorMode) -> Result<Image> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not open or find file {path}"))?;
    decode(&bytes, mode).with_context(|| format!("could not decode image {path}"))
}

fn decode_png(bytes: &[u8], mode: ColorMode) -> Result<Image> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info()?;
    let size = reader.output_buffer_size().context("PNG too large")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf)?;
    buf.truncate(info.buffer_size());
    let (w, h) = (info.width as usize, info.height as usize);
    let src_channels = info.color_type.samples();
    let is_color = matches!(
        info.color_type,
        png::ColorType::Rgb | png::ColorType::Rgba | png::ColorType::Indexed
    );
    let line = info.line_size;
    let want_color = match mode {
        ColorMode::Native => is_color,
        ColorMode::Color => true,
        ColorMode::Gray => false,
    };
    let out_c = if want_color { 3 } else { 1 };
    let mut out = Vec::with_capacity(w * h * out_c);
    for y in 0..h {
        let row = &buf[y * line..y * line + w * src_channels];
        for px in row.chunks_exact(src_channels) {
            match (src_channels >= 3, want_color) {
                // RGB(A) -> BGR, alpha dropped (OpenCV strips it unless IMREAD_UNCHANGED).
                (true, true) => out.extend_from_slice(&[px[2], px[1], px[0]]),
                // libpng's png_set_rgb_to_gray(1, 0.299, 0.587): 15-bit coefficients, truncated.
                (true, false) => {
                    let (r, g, b) = (px[0] as u32, px[1] as u32, px[2] as u32);
                    let v = if r == g && r == b {
                        r
                    } else {
                        (9797 * r + 19234 * g + 3737 * b) >> 15
                    };
                    out.push(v as u8);
                }
                (false, true) => out.extend_from_slice(&[px[0], px[0], px[0]]),
                (false, false) => out.push(px[0]),
            }
        }
    }
    Image::new(h, w, out_c, out)
}

fn decode_jpeg(bytes: &[u8], mode: ColorMode) -> Result<Image> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let probe_opts = DecoderOptions::default()
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut probe =
        zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), probe_opts);
    probe
        .decode_headers()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let components = probe.info().map(|i| i.components).unwrap_or(3);
    let want_color = match mode {
        ColorMode::Native => components != 1,
        ColorMode::Color => true,
        ColorMode::Gray => false,
    };
    let out_space = if want_color {
        ColorSpace::BGR
    } else {
        ColorSpace::Luma
    };
    let opts = probe_opts.jpeg_set_out_colorspace(out_space);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(std::io::Cursor::new(bytes), opts);
    let pixels = decoder.decode().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let info = decoder.info().context("JPEG without a frame header")?;
    let (w, h) = (info.width as usize, info.height as usize);
    let got_space = decoder.output_colorspace().unwrap_or(out_space);
    let got_c = got_space.num_components();
    ensure!(
        pixels.len() == w * h * got_c,
        "JPEG decoder returned {} bytes for {w}x{h}x{got_c}",
        pixels.len()
    );
    let out_c = if want_color { 3 } else { 1 };
    if got_space == out_space {
        return Image::new(h, w, out_c, pixels);
    }
    // The decoder chose another layout (e.g. grey source asked for colour): convert.
    let mut out = Vec::with_capacity(w * h * out_c);
    for px in pixels.chunks_exact(got_c) {
        let (b, g, r) = match got_space {
            ColorSpace::RGB | ColorSpace::RGBA => (px[2], px[1], px[0]),
            ColorSpace::BGR | ColorSpace::BGRA => (px[0], px[1], px[2]),
            _ => (px[0], px[0], px[0]),
        };
        if want_color {
            out.extend_from_slice(&[b, g, r]);
        } else {
            out.push(bgr_to_gray(b, g, r));
        }
    }
    Image::new(h, w, out_c, out)
}

/// OpenCV's cvtColor BGR2GRAY for 8-bit (14-bit fixed-point coefficients, rounded).
pub fn bgr_to_gray(b: u8, g: u8, r: u8) -> u8 {
    ((b as u32 * 1868 + g as u32 * 9617 + r as u32 * 4899 + (1 << 13)) >> 14) as u8
}

const COEF_BITS: i32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Round half to even, like cvRound / lrint in the default rounding mode.
fn round_even(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// One axis of OpenCV's INTER_LINEAR set-up: source index and the two 11-bit weights per output.
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, i32, i32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut f = f - s as f32;
            if s < 0 {
                f = 0.0;
                s = 0;
            }
            if s >= src as i64 - 1 {
                f = 0.0;
                s = src as i64 - 1;
            }
            let a0 = round_even((1.0 - f) * COEF_SCALE).clamp(i16::MIN as i32, i16::MAX as i32);
            let a1 = round_even(f * COEF_SCALE).clamp(i16::MIN as i32, i16::MAX as i32);
            (s as usize, a0, a1)
        })
        .collect()
}

/// Vertical taps: OpenCV keeps the raw (unclamped) floor and clips the two row indices instead.
fn linear_rows(src: usize, dst: usize) -> Vec<(usize, usize, i32, i32)> {
    let scale = 1.0 / (dst as f64 / src as f64);
    let clip = |v: i64| v.clamp(0, src as i64 - 1) as usize;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let f = f - s;
            let b0 = round_even((1.0 - f) * COEF_SCALE).clamp(i16::MIN as i32, i16::MAX as i32);
            let b1 = round_even(f * COEF_SCALE).clamp(i16::MIN as i32, i16::MAX as i32);
            (clip(s as i64), clip(s as i64 + 1), b0, b1)
        })
        .collect()
}

/// `cv::resize(src, dst, Size(width, height))` with the default INTER_LINEAR on 8-bit images,
/// reproducing OpenCV's fixed-point arithmetic so results match real Caffe bit for bit: 11-bit
/// weights; the horizontal pass keeps `src * alpha` sums exactly (int32), and the vertical pass
/// is OpenCV's `VResizeLinear<uchar, int, short, ...>` specialisation, whose SIMD and scalar code
/// both compute `(((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2`.
pub fn resize_linear(img: &Image, width: usize, height: usize) -> Result<Image> {
    ensure!(width > 0 && height > 0, "cannot resize to {width}x{height}");
    ensure!(
        img.width > 0 && img.height > 0,
        "cannot resize an empty image"
    );
    if width == img.width && height == img.height {
        return Ok(img.clone());
    }
    let cn = img.channels;
    let xt = linear_taps(img.width, width);
    let yt = linear_rows(img.height, height);
    let row_len = width * cn;
    let src_row = img.width * cn;
    let hresize = |y: usize, out: &mut Vec<i32>| {
        let row = &img.data[y * src_row..(y + 1) * src_row];
        out.clear();
        for &(sx, a0, a1) in &xt {
            let sx1 = (sx + 1).min(img.width - 1);
            for k in 0..cn {
                let p0 = row[sx * cn + k] as i32;
                let v = if sx1 == sx && a1 == 0 {
                    p0 * a0
                } else {
                    p0 * a0 + row[sx1 * cn + k] as i32 * a1
                };
                out.push(v);
            }
        }
    };
    let mut out = vec![0u8; height * row_len];
    let (mut r0, mut r1) = (Vec::with_capacity(row_len), Vec::with_capacity(row_len));
    let mut cached: (usize, usize) = (usize::MAX, usize::MAX);
    for (dy, &(y0, y1, b0, b1)) in yt.iter().enumerate() {
        if cached != (y0, y1) {
            if cached.1 == y0 {
                std::mem::swap(&mut r0, &mut r1);
            } else {
                hresize(y0, &mut r0);
            }
            hresize(y1, &mut r1);
            cached = (y0, y1);
        }
        let dst = &mut out[dy * row_len..(dy + 1) * row_len];
        for ((d, &s0), &s1) in dst.iter_mut().zip(r0.iter()).zip(r1.iter()) {
            let v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2;
            *d = v.clamp(0, 255) as u8;
        }
    }
    Image::new(height, width, cn, out)
}

/// Encodes like `cv::imencode("." + ext, img)`: "png", or "jpg"/"jpeg" (quality 95, OpenCV's
/// default).
pub fn encode(img: &Image, ext: &str) -> Result<Vec<u8>> {
    match ext.to_ascii_lowercase().as_str() {
        "png" => encode_png(img),
        "jpg" | "jpeg" | "jpe" => encode_jpeg(img),
        other => bail!("cannot encode images as \"{other}\" (supported: png, jpg)"),
    }
}

fn rgb_order(img: &Image) -> Vec<u8> {
    if img.channels == 3 {
        img.data
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect()
    } else {
        img.data.clone()
    }
}

fn encode_png(img: &Image) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
        enc.set_color(if img.channels == 3 {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&rgb_order(img))?;
        writer.finish()?;
    }
    Ok(out)
}

fn encode_jpeg(img: &Image) -> Result<Vec<u8>> {
    ensure!(
        img.width <= u16::MAX as usize && img.height <= u16::MAX as usize,
        "image too large for JPEG"
    );
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, 95);
    let ct = if img.channels == 3 {
        jpeg_encoder::ColorType::Bgr
    } else {
        jpeg_encoder::ColorType::Luma
    };
    enc.encode(&img.data, img.width as u16, img.height as u16, ct)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even() {
        assert_eq!(round_even(0.5), 0);
        assert_eq!(round_even(1.5), 2);
        assert_eq!(round_even(2.5), 2);
        assert_eq!(round_even(-0.5), 0);
        assert_eq!(round_even(1024.4), 1024);
    }

    #[test]
    fn identity_and_constant_resize() {
        let img = Image::new(3, 4, 3, (0..36).map(|v| v as u8).collect()).unwrap();
        assert_eq!(resize_linear(&img, 4, 3).unwrap(), img);
        let flat = Image::new(5, 7, 1, vec![77; 35]).unwrap();
        let r = resize_linear(&flat, 13, 9).unwrap();
        assert!(r.data.iter().all(|&v| v == 77));
    }

    #[test]
    fn png_round_trip_is_bgr() {
        let img = Image::new(2, 2, 3, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
        let bytes = encode(&img, "png").unwrap();
        assert_eq!(decode(&bytes, ColorMode::Native).unwrap(), img);
        assert_eq!(decode(&bytes, ColorMode::Gray).unwrap().channels, 1);
    }
}
