//! The route table. Each endpoint is a module; a new one (e.g. chat) adds a
//! [`Route`] variant, its path in [`Route::match_path`], its method in
//! [`Route::method`], and a `dispatch` arm in `lib.rs`.

pub mod embeddings;
pub mod models;
pub mod root;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /`
    Root,
    /// `GET /v1/models`
    Models,
    /// `GET /v1/models/{id}`: the rest of the path, still percent-encoded.
    Model(&'a str),
    /// `POST /v1/embeddings`
    Embeddings,
}

impl<'a> Route<'a> {
    /// The route for a path (no query string), or `None` for an unknown URL.
    pub fn match_path(path: &'a str) -> Option<Route<'a>> {
        match path {
            "/" => Some(Route::Root),
            "/v1/models" | "/v1/models/" => Some(Route::Models),
            "/v1/embeddings" => Some(Route::Embeddings),
            _ => path.strip_prefix("/v1/models/").map(Route::Model),
        }
    }

    /// The one method the route accepts (also the `allow` header of a 405).
    pub fn method(&self) -> &'static str {
        match self {
            Route::Root | Route::Models | Route::Model(_) => "GET",
            Route::Embeddings => "POST",
        }
    }
}
