//! Moving machines through OCI registries: the distribution client, push and pull.

pub mod auth;
pub mod client;
pub mod remote;
pub mod transfer;

pub use client::{Client, ClientOptions};
pub use remote::RemoteRef;
pub use transfer::{pull, push, PullOptions, Pulled, PushOptions, Pushed};
