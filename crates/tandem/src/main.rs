fn main() { println!("tandem"); }
