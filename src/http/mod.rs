//! Sans-IO HTTP/1.1: request heads, body framing, forms, responses and the WebSocket upgrade on
//! the server side; URLs and response parsing for the requests ignis makes as a client, and the
//! client side of the agent's WebSocket (handshake and frames).
//!
//! Nothing here touches a socket or reads the clock; the driver feeds bytes and a wall time in.

pub mod body;
pub mod client;
pub mod date;
pub mod form;
pub mod request_head;
pub mod response;
pub mod url;
pub mod websocket_client;
pub mod websocket_upgrade;

pub use request_head::{Method, RequestHead, Version};
pub use response::Response;
