//! A TCP proxy that drops chosen produce responses: the broker has written the batch, the client
//! never hears so, and must retry. Used to prove that idempotent retries are not duplicated.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const PRODUCE: i16 = 0;

pub struct DropProxy {
    pub port: u16,
    dropped: Arc<AtomicUsize>,
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len).max(0) as usize;
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..])?;
    Ok(frame)
}

impl DropProxy {
    /// Listens on a free loopback port and forwards to `target`, closing the connection instead
    /// of delivering the first `drop_produce_responses` produce responses.
    pub fn start(target: SocketAddr, drop_produce_responses: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let budget = Arc::new(AtomicUsize::new(drop_produce_responses));
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(broker) = TcpStream::connect(target) else {
                    continue;
                };
                let (budget, counter) = (budget.clone(), counter.clone());
                let keys: Arc<Mutex<VecDeque<i16>>> = Arc::default();
                let (mut c_in, mut b_out) = (
                    client.try_clone().expect("clone"),
                    broker.try_clone().expect("clone"),
                );
                let up_keys = keys.clone();
                std::thread::spawn(move || {
                    while let Ok(frame) = read_frame(&mut c_in) {
                        // Every request here expects a response (the test never uses acks=0).
                        let key = i16::from_be_bytes([frame[4], frame[5]]);
                        up_keys.lock().expect("lock").push_back(key);
                        if b_out.write_all(&frame).is_err() {
                            break;
                        }
                    }
                    let _ = b_out.shutdown(Shutdown::Both);
                });
                let (mut b_in, mut c_out) = (broker, client);
                std::thread::spawn(move || {
                    while let Ok(frame) = read_frame(&mut b_in) {
                        let key = keys.lock().expect("lock").pop_front();
                        let drop_it = key == Some(PRODUCE)
                            && budget
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                                    b.checked_sub(1)
                                })
                                .is_ok();
                        if drop_it {
                            counter.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if c_out.write_all(&frame).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                    let _ = b_in.shutdown(Shutdown::Both);
                });
            }
        });
        Self { port, dropped }
    }

    /// How many produce responses were swallowed so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}
