//! Between the API and the providers: queues that turn many concurrent requests
//! into few, well-filled batches.

pub mod embed_queue;
pub mod fair_share;
pub mod generate;
