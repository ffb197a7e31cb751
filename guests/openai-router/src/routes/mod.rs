//! The route table. Each endpoint is a module; a new one adds a [`Route`]
//! variant, its path in [`Route::match_path`], its method in [`Route::method`],
//! and a `dispatch` arm in `lib.rs`. Shared pieces: [`json`] (field readers),
//! [`sampling`] (the generation fields chat and completions share) and
//! [`generate`] (running a generation, buffered or as SSE).

pub mod chat;
pub mod completions;
pub mod conversations;
pub mod embeddings;
pub mod generate;
pub mod json;
pub mod list;
pub mod models;
pub mod rerank;
pub mod responses;
pub mod root;
pub mod sampling;
pub mod structured;
pub mod tokenize;
pub mod truncation;

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
    /// `POST /v1/chat/completions`; `GET` lists the stored ones.
    ChatCompletions,
    /// `GET`, `POST` (metadata) and `DELETE /v1/chat/completions/{id}`: a stored
    /// chat completion.
    StoredChatCompletion(&'a str),
    /// `GET /v1/chat/completions/{id}/messages`
    StoredChatMessages(&'a str),
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/responses`
    Responses,
    /// `GET` / `DELETE /v1/responses/{id}`: a stored response.
    StoredResponse(&'a str),
    /// `GET /v1/responses/{id}/input_items`
    ResponseInputItems(&'a str),
    /// `POST /v1/conversations`
    Conversations,
    /// `GET`, `POST` (metadata), `DELETE /v1/conversations/{id}`
    Conversation(&'a str),
    /// `GET`, `POST /v1/conversations/{id}/items`
    ConversationItems(&'a str),
    /// `GET`, `DELETE /v1/conversations/{id}/items/{item_id}`
    ConversationItem(&'a str, &'a str),
    /// `POST /tokenize` (vLLM's path) or `/v1/tokenize` (where the default config
    /// sends a request to this router: root paths go to the console)
    Tokenize,
    /// `POST /detokenize`, `/v1/detokenize`
    Detokenize,
    /// `POST /rerank`, `/v1/rerank`
    Rerank,
    /// `POST /score`, `/v1/score` (vLLM's)
    Score,
}

impl<'a> Route<'a> {
    /// The route for a path (no query string), or `None` for an unknown URL.
    pub fn match_path(path: &'a str) -> Option<Route<'a>> {
        match path {
            "/" => Some(Route::Root),
            "/v1/models" | "/v1/models/" => Some(Route::Models),
            "/v1/embeddings" => Some(Route::Embeddings),
            "/v1/chat/completions" => Some(Route::ChatCompletions),
            "/v1/completions" => Some(Route::Completions),
            "/v1/responses" => Some(Route::Responses),
            "/v1/conversations" => Some(Route::Conversations),
            "/tokenize" | "/v1/tokenize" => Some(Route::Tokenize),
            "/detokenize" | "/v1/detokenize" => Some(Route::Detokenize),
            "/rerank" | "/v1/rerank" | "/v2/rerank" => Some(Route::Rerank),
            "/score" | "/v1/score" => Some(Route::Score),
            _ => {
                if let Some(id) = path.strip_prefix("/v1/models/") {
                    return Some(Route::Model(id));
                }
                if let Some(rest) = path.strip_prefix("/v1/conversations/") {
                    return Some(match rest.split_once("/items") {
                        None => Route::Conversation(rest),
                        Some((id, "")) => Route::ConversationItems(id),
                        Some((id, item)) => Route::ConversationItem(id, item.strip_prefix('/')?),
                    });
                }
                if let Some(id) = path.strip_prefix("/v1/chat/completions/") {
                    return Some(match id.strip_suffix("/messages") {
                        Some(id) => Route::StoredChatMessages(id),
                        None => Route::StoredChatCompletion(id),
                    });
                }
                let id = path.strip_prefix("/v1/responses/")?;
                Some(match id.strip_suffix("/input_items") {
                    Some(id) => Route::ResponseInputItems(id),
                    None => Route::StoredResponse(id),
                })
            }
        }
    }

    /// The methods the route accepts (also the `allow` header of a 405).
    pub fn methods(&self) -> &'static str {
        match self {
            Route::Root
            | Route::Models
            | Route::Model(_)
            | Route::ResponseInputItems(_)
            | Route::StoredChatMessages(_) => "GET",
            Route::ChatCompletions | Route::ConversationItems(_) => "GET, POST",
            Route::Conversation(_) => "GET, POST, DELETE",
            Route::ConversationItem(..) => "GET, DELETE",
            Route::Conversations => "POST",
            Route::StoredChatCompletion(_) => "GET, POST, DELETE",
            Route::Embeddings
            | Route::Completions
            | Route::Responses
            | Route::Tokenize
            | Route::Detokenize
            | Route::Rerank
            | Route::Score => "POST",
            Route::StoredResponse(_) => "GET, DELETE",
        }
    }

    pub fn allows(&self, method: &str) -> bool {
        self.methods().split(", ").any(|m| m == method)
    }
}
