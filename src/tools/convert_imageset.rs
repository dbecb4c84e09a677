//! `convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME`: converts a set of images into a
//! database of Datum records, exactly as Caffe's tool does: keys `%08d_<file>` in list order (after
//! the optional shuffle), images decoded as BGR (or grey with -gray), resized with INTER_LINEAR
//! when both -resize_height and -resize_width are given, stored raw (CHW uint8) or encoded.
use anyhow::{Context, Result, bail};
use prost::Message;

use crate::data::db::{self, Backend};
use crate::data::image::{self, ColorMode};
use crate::data::read_image_list;
use crate::proto::Datum;
use crate::rng::Rng;

/// Caffe's flags for convert_imageset (same names and defaults).
#[derive(Clone, Debug)]
pub struct ConvertImagesetArgs {
    /// Prefix of every path in the list (plain concatenation, as in Caffe: keep the trailing `/`).
    pub root_folder: String,
    pub list_file: String,
    pub db_name: String,
    /// -gray: read images as greyscale.
    pub gray: bool,
    /// -shuffle: randomly shuffle the order of images and their labels.
    pub shuffle: bool,
    /// -backend: "lmdb" (default) or "leveldb".
    pub backend: String,
    /// -resize_width / -resize_height: both > 0 to resize (default 0 = keep the size).
    pub resize_width: i32,
    pub resize_height: i32,
    /// -check_size: all records must have the same data size.
    pub check_size: bool,
    /// -encoded: store the encoded image (file bytes, or re-encoded when resized / converted).
    pub encoded: bool,
    /// -encode_type: "png" or "jpg" for re-encoding (implies -encoded).
    pub encode_type: String,
    /// Seed for -shuffle (Caffe seeds from the system; `None` uses the clock).
    pub seed: Option<u64>,
}

impl Default for ConvertImagesetArgs {
    fn default() -> Self {
        ConvertImagesetArgs {
            root_folder: String::new(),
            list_file: String::new(),
            db_name: String::new(),
            gray: false,
            shuffle: false,
            backend: "lmdb".to_string(),
            resize_width: 0,
            resize_height: 0,
            check_size: false,
            encoded: false,
            encode_type: String::new(),
            seed: None,
        }
    }
}

fn extension(file: &str) -> String {
    file.rfind('.')
        .map_or_else(|| file.to_string(), |p| file[p + 1..].to_string())
        .to_ascii_lowercase()
}

/// Caffe's matchExt: the file's extension equals the encoding ("jpg" also matches "jpeg").
fn match_ext(file: &str, encoding: &str) -> bool {
    let (ext, en) = (extension(file), encoding.to_ascii_lowercase());
    ext == en || (en == "jpg" && ext == "jpeg")
}

/// Caffe's ReadImageToDatum: one image file to a Datum.
pub fn image_to_datum(
    path: &str,
    label: i32,
    height: usize,
    width: usize,
    is_color: bool,
    encoding: &str,
) -> Result<Datum> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not open or find file {path}"))?;
    let img = image::decode(&bytes, ColorMode::from_is_color(is_color))
        .with_context(|| format!("could not decode {path}"))?;
    let img = if height > 0 && width > 0 {
        image::resize_linear(&img, width, height)?
    } else {
        img
    };
    if !encoding.is_empty() {
        let data = if (img.channels == 3) == is_color
            && height == 0
            && width == 0
            && match_ext(path, encoding)
        {
            bytes
        } else {
            image::encode(&img, encoding).with_context(|| format!("encoding {path}"))?
        };
        return Ok(Datum {
            data: Some(data),
            label: Some(label),
            encoded: Some(true),
            ..Default::default()
        });
    }
    Ok(Datum {
        channels: Some(img.channels as i32),
        height: Some(img.height as i32),
        width: Some(img.width as i32),
        data: Some(img.to_chw()),
        label: Some(label),
        float_data: Vec::new(),
        encoded: Some(false),
    })
}

pub fn run(args: &ConvertImagesetArgs) -> Result<()> {
    let backend = Backend::parse(&args.backend)?;
    let mut lines = read_image_list(&args.list_file)?;
    if args.shuffle {
        eprintln!("Shuffling data");
        let mut rng = args.seed.map_or_else(Rng::from_clock, Rng::new);
        rng.shuffle(&mut lines);
    }
    eprintln!("A total of {} images.", lines.len());
    let encoded = args.encoded || !args.encode_type.is_empty();
    if !args.encode_type.is_empty() && !args.encoded {
        eprintln!("encode_type specified, assuming encoded=true.");
    }
    let height = args.resize_height.max(0) as usize;
    let width = args.resize_width.max(0) as usize;
    let mut writer = db::create_writer(backend, &args.db_name)?;
    eprintln!("Opened {} {}", backend.name(), args.db_name);
    let mut count = 0usize;
    let mut skipped = 0usize;
    let mut data_size: Option<usize> = None;
    for (line_id, (file, label)) in lines.iter().enumerate() {
        let encoding = if encoded && args.encode_type.is_empty() {
            extension(file)
        } else {
            args.encode_type.clone()
        };
        let path = format!("{}{}", args.root_folder, file);
        let datum = match image_to_datum(&path, *label, height, width, !args.gray, &encoding) {
            Ok(d) => d,
            Err(e) => {
                // Caffe logs the failure and goes on with the next image.
                eprintln!("Could not convert {path}: {e:#}; skipped");
                skipped += 1;
                continue;
            }
        };
        if args.check_size {
            let size = datum.data().len();
            match data_size {
                None => {
                    data_size = Some((datum.channels() * datum.height() * datum.width()) as usize)
                }
                Some(expected) if size != expected => {
                    bail!(
                        "{path}: incorrect data field size {size} (expected {expected}, from the first image)"
                    )
                }
                Some(_) => {}
            }
        }
        let key = format!("{line_id:08}_{file}");
        writer.put(key.as_bytes(), &datum.encode_to_vec())?;
        count += 1;
        if count.is_multiple_of(50) || count == lines.len() {
            crate::solver::log::progress(&format!(
                "convert_imageset: {count}/{} images ({}%)",
                lines.len(),
                count * 100 / lines.len().max(1)
            ));
        }
        if count.is_multiple_of(1000) {
            writer.commit()?;
            crate::solver::log::info(
                "convert_imageset.cpp:145",
                &format!("Processed {count} files."),
            );
        }
    }
    writer.close()?;
    if !count.is_multiple_of(1000) {
        crate::solver::log::info(
            "convert_imageset.cpp:145",
            &format!("Processed {count} files."),
        );
    }
    if skipped > 0 {
        eprintln!(
            "{skipped} of {} images could not be read and were skipped",
            lines.len()
        );
    }
    Ok(())
}
