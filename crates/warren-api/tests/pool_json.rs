//! A pool's JSON is a create's, with a name and a size.
use warren_api::CreatePool;

#[test]
fn a_pool_is_a_flat_create_with_a_name_and_a_size() {
    let p: CreatePool = serde_json::from_str(
        r#"{"name": "py", "size": 3, "image": "base", "runtime": "gvisor", "memory_mb": 256}"#,
    )
    .expect("parses");
    assert_eq!((p.name.as_str(), p.size), ("py", 3));
    assert_eq!(p.sandbox.image.as_deref(), Some("base"));
    assert_eq!(p.sandbox.memory_mb, Some(256));
    let bad = serde_json::from_str::<CreatePool>(r#"{"name": "py", "size": 1, "imgae": "x"}"#);
    assert!(bad.is_err(), "a misspelt field is refused");
}
