fn main() {
    println!("eniroute");
}
