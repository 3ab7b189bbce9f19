//! Library half of the `warren` binary: the API client and the root-filesystem helpers, shared
//! by the CLI verbs, `warren bench` and the integration tests.
pub mod base_image;
pub mod client;
pub mod rootfs;
