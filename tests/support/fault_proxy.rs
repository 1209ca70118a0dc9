//! A fault-injecting HTTP proxy between the EC2 client and the emulator, for what moto does not
//! model: capacity errors and throttling.
//!
//! Every request is recorded (action and form parameters) and forwarded unchanged, except:
//! - CreateFleet overrides matching a capacity rule (instance type and/or capacity type) are
//!   removed before forwarding, as EC2 skips offerings without capacity, and reported in the
//!   reply's errors with the rule's code, as EC2 names the pools it could not fill; when none
//!   remain, the proxy answers like EC2 does: no instance, one error per override;
//! - an action with throttles left is answered with HTTP 503 `RequestLimitExceeded`;
//! - an action with server errors left is answered with HTTP 500 `InternalError`, unforwarded;
//! - an action with lost responses left is forwarded (the emulator acts on it: a CreateFleet
//!   launches) and then answered with HTTP 500, as when EC2's answer never reaches the caller.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};

/// Offerings to refuse: an unset field matches anything.
#[derive(Debug, Clone)]
pub struct CapacityRule {
    pub instance_type: Option<String>,
    pub capacity_type: Option<String>,
    pub code: String,
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub action: String,
    pub params: BTreeMap<String, String>,
    /// When the proxy received it.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct State {
    capacity_rules: Vec<CapacityRule>,
    throttles: HashMap<String, usize>,
    server_errors: HashMap<String, usize>,
    lost_responses: HashMap<String, usize>,
    seen: Vec<Seen>,
}

pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Starts the proxy on a free loopback port, forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let address: SocketAddr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request| handle(request, state.clone(), client.clone(), upstream.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { endpoint: format!("http://{address}"), state }
    }

    pub fn refuse_capacity(&self, rule: CapacityRule) {
        self.state.lock().expect("proxy state").capacity_rules.push(rule);
    }

    pub fn clear_capacity_rules(&self) {
        self.state.lock().expect("proxy state").capacity_rules.clear();
    }

    /// Answers the next `times` calls of `action` with throttling.
    pub fn throttle(&self, action: &str, times: usize) {
        self.state.lock().expect("proxy state").throttles.insert(action.to_owned(), times);
    }

    /// Answers the next `times` calls of `action` with an internal error, without forwarding.
    pub fn fail(&self, action: &str, times: usize) {
        self.state.lock().expect("proxy state").server_errors.insert(action.to_owned(), times);
    }

    /// Forwards the next `times` calls of `action`, then answers each with an internal error.
    pub fn lose_responses(&self, action: &str, times: usize) {
        self.state.lock().expect("proxy state").lost_responses.insert(action.to_owned(), times);
    }

    /// Every request seen so far.
    pub fn all_seen(&self) -> Vec<Seen> {
        self.state.lock().expect("proxy state").seen.clone()
    }

    /// The requests of one action seen so far.
    pub fn seen(&self, action: &str) -> Vec<Seen> {
        self.state.lock().expect("proxy state").seen.iter().filter(|s| s.action == action).cloned().collect()
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let action = params.get("Action").cloned().unwrap_or_default();

    let mut forward_body = body.clone();
    let lose_response;
    // Errors for the refused overrides of a CreateFleet forwarded with the others.
    let mut refused = String::new();
    {
        let mut state = state.lock().expect("proxy state");
        state.seen.push(Seen { action: action.clone(), params: params.clone(), at: std::time::Instant::now() });
        if take(&mut state.throttles, &action) {
            return Ok(xml(StatusCode::SERVICE_UNAVAILABLE, throttled()));
        }
        if take(&mut state.server_errors, &action) {
            return Ok(xml(StatusCode::INTERNAL_SERVER_ERROR, internal_error()));
        }
        lose_response = take(&mut state.lost_responses, &action);
        if action == "CreateFleet" && !state.capacity_rules.is_empty() {
            match refuse_overrides(&params, &state.capacity_rules) {
                Refusal::None => {}
                Refusal::Some(kept, errors) => {
                    forward_body = Bytes::from(encode(&kept));
                    refused = error_items(&params, &errors);
                }
                Refusal::All(errors) => return Ok(xml(StatusCode::OK, fleet_errors(&params, &errors))),
            }
        }
    }

    let mut forward = Request::builder().method(parts.method).uri(format!("{upstream}{}", parts.uri));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    let forward = forward.body(Full::new(forward_body)).expect("a valid forwarded request");
    let response = match client.request(forward).await {
        Ok(response) => response,
        Err(error) => {
            return Ok(Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Full::new(Bytes::from(error.to_string())))
                .expect("a valid response"));
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if lose_response {
        return Ok(xml(StatusCode::INTERNAL_SERVER_ERROR, internal_error()));
    }
    if !refused.is_empty() && parts.status == StatusCode::OK {
        let mut parts = parts;
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
        let reply = String::from_utf8_lossy(&body);
        let body = reply.replacen(
            "</CreateFleetResponse>",
            &format!("<errorSet>{refused}</errorSet></CreateFleetResponse>"),
            1,
        );
        return Ok(Response::from_parts(parts, Full::new(Bytes::from(body))));
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// Uses up one of the faults left for `action`; true if there was one.
fn take(left: &mut HashMap<String, usize>, action: &str) -> bool {
    match left.get_mut(action) {
        Some(count) if *count > 0 => {
            *count -= 1;
            true
        }
        _ => false,
    }
}

fn internal_error() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InternalError</Code><Message>An internal error has occurred (fault proxy).</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>".to_owned()
}

enum Refusal {
    None,
    /// Some overrides refused: forward these parameters (overrides renumbered), and report these
    /// errors (as in `All`).
    Some(Vec<(String, String)>, Vec<(String, String, String)>),
    /// Every override refused: (instance type, subnet, code) per override.
    All(Vec<(String, String, String)>),
}

/// Splits `LaunchTemplateConfigs.C.Overrides.O.Field` into (C, O, Field).
fn override_key(key: &str) -> Option<(u32, u32, &str)> {
    let rest = key.strip_prefix("LaunchTemplateConfigs.")?;
    let (config, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("Overrides.")?;
    let (index, field) = rest.split_once('.')?;
    Some((config.parse().ok()?, index.parse().ok()?, field))
}

fn refuse_overrides(params: &BTreeMap<String, String>, rules: &[CapacityRule]) -> Refusal {
    let capacity_type =
        params.get("TargetCapacitySpecification.DefaultTargetCapacityType").cloned().unwrap_or_default();
    let mut overrides: BTreeMap<(u32, u32), BTreeMap<&str, &str>> = BTreeMap::new();
    for (key, value) in params {
        if let Some((config, index, field)) = override_key(key) {
            overrides.entry((config, index)).or_default().insert(field, value);
        }
    }
    let refused: BTreeMap<(u32, u32), String> = overrides
        .iter()
        .filter_map(|(at, fields)| {
            let instance_type = fields.get("InstanceType").copied().unwrap_or_default();
            rules
                .iter()
                .find(|rule| {
                    rule.instance_type.as_deref().is_none_or(|t| t == instance_type)
                        && rule.capacity_type.as_deref().is_none_or(|c| c == capacity_type)
                })
                .map(|rule| (*at, rule.code.clone()))
        })
        .collect();
    if refused.is_empty() {
        return Refusal::None;
    }
    let errors = refused
        .iter()
        .map(|(at, code)| {
            let fields = &overrides[at];
            let get = |field: &str| fields.get(field).copied().unwrap_or_default().to_owned();
            (get("InstanceType"), get("SubnetId"), code.clone())
        })
        .collect();
    if refused.len() == overrides.len() {
        return Refusal::All(errors);
    }
    // Renumber the kept overrides of each config from 1.
    let mut renumbered: HashMap<(u32, u32), u32> = HashMap::new();
    let mut next: HashMap<u32, u32> = HashMap::new();
    for at in overrides.keys().filter(|at| !refused.contains_key(at)) {
        let counter = next.entry(at.0).or_insert(0);
        *counter += 1;
        renumbered.insert(*at, *counter);
    }
    let kept = params
        .iter()
        .filter_map(|(key, value)| match override_key(key) {
            Some((config, index, field)) => renumbered
                .get(&(config, index))
                .map(|new| (format!("LaunchTemplateConfigs.{config}.Overrides.{new}.{field}"), value.clone())),
            None => Some((key.clone(), value.clone())),
        })
        .collect();
    Refusal::Some(kept, errors)
}

fn encode(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
}

fn xml(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml;charset=UTF-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn throttled() -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>".to_owned()
}

fn fleet_errors(params: &BTreeMap<String, String>, errors: &[(String, String, String)]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateFleetResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>fault-proxy</requestId><fleetId>fleet-faultproxy</fleetId><errorSet>{}</errorSet><fleetInstanceSet/></CreateFleetResponse>",
        error_items(params, errors)
    )
}

/// The `errorSet` items of a CreateFleet reply: (instance type, subnet, code) per override.
fn error_items(params: &BTreeMap<String, String>, errors: &[(String, String, String)]) -> String {
    let template = params
        .get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName")
        .cloned()
        .unwrap_or_default();
    let lifecycle = params.get("TargetCapacitySpecification.DefaultTargetCapacityType").cloned().unwrap_or_default();
    errors
        .iter()
        .map(|(instance_type, subnet, code)| {
            format!(
                "<item><launchTemplateAndOverrides><launchTemplateSpecification><launchTemplateName>{template}</launchTemplateName><version>$Latest</version></launchTemplateSpecification><overrides><instanceType>{instance_type}</instanceType><subnetId>{subnet}</subnetId></overrides></launchTemplateAndOverrides><lifecycle>{lifecycle}</lifecycle><errorCode>{code}</errorCode><errorMessage>We currently do not have sufficient {instance_type} capacity in the Availability Zone you requested (fault proxy).</errorMessage></item>"
            )
        })
        .collect()
}
