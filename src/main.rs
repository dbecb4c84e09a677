fn main() {
    println!("caffe-rs");
}
