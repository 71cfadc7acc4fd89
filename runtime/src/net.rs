//! TCP networking (placeholder).
pub use may::net::{TcpListener, TcpStream, UdpSocket};
