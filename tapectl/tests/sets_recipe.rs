mod support;

#[test]
fn placeholder() {}
