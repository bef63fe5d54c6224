//! Client-layer tests against a mocked API server (tower-test): each expected request
//! is checked in order and answered by hand.

use http::{Method, Request, Response, StatusCode};
use k8s::actuator::{Actuator, EvictionResult, K8sError};
use kube::client::Body;
use model::{NodeName, PodKey, PodUid, Time};
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

type MockHandle = Handle<Request<Body>, Response<Body>>;

fn client() -> (kube::Client, MockHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(body: Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

async fn body_json(req: Request<Body>) -> Value {
    use http_body_util::BodyExt;
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn node(rv: &str, taints: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": rv}, "spec": {"taints": taints}})
}

#[tokio::test]
async fn eviction_posts_to_the_subresource_and_maps_429_and_404() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("eviction 1");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/ns/pods/web-1/eviction"
        );
        let body = body_json(req).await;
        assert_eq!(body["apiVersion"], "policy/v1");
        assert_eq!(body["kind"], "Eviction");
        assert_eq!(
            body["deleteOptions"]["gracePeriodSeconds"], 45,
            "the pod's own grace period under camelCase deleteOptions"
        );
        assert_eq!(
            body["deleteOptions"]["preconditions"]["uid"], "uid-1",
            "the pod's uid as a precondition"
        );
        send.send_response(status(429, "TooManyRequests"));
        let (_, send) = handle.next_request().await.expect("eviction 2");
        send.send_response(status(404, "NotFound"));
        let (req, send) = handle.next_request().await.expect("eviction 3");
        assert!(
            body_json(req)
                .await
                .get("deleteOptions")
                .is_none_or(|o| o.is_null()),
            "no options: the pod's defaults apply"
        );
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(
                    b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Success\"}".to_vec(),
                ))
                .unwrap(),
        );
        // A pod of the same name but another uid: the precondition fails (409).
        let (_, send) = handle.next_request().await.expect("eviction 4");
        send.send_response(status(409, "Conflict"));
    });
    let pod = PodKey::new("ns", "web-1");
    let uid = PodUid::new("uid-1");
    let grace = Some(std::time::Duration::from_secs(45));
    assert!(matches!(
        actuator.evict(&pod, Some(&uid), grace).await.unwrap(),
        EvictionResult::Refused(_)
    ));
    assert_eq!(
        actuator.evict(&pod, Some(&uid), grace).await.unwrap(),
        EvictionResult::Gone
    );
    assert_eq!(
        actuator.evict(&pod, None, None).await.unwrap(),
        EvictionResult::Evicted
    );
    assert_eq!(
        actuator.evict(&pod, Some(&uid), grace).await.unwrap(),
        EvictionResult::Gone,
        "409: the pod meant is gone"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn retire_retries_on_conflict_with_a_fresh_read() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("get 1");
        assert_eq!(req.method(), Method::GET);
        send.send_response(ok(node(
            "1",
            json!([{"key": "spot", "effect": "NoSchedule"}]),
        )));
        let (req, send) = handle.next_request().await.expect("patch 1");
        assert_eq!(req.method(), Method::PATCH);
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        send.send_response(status(409, "Conflict"));
        let (_, send) = handle.next_request().await.expect("get 2");
        send.send_response(ok(node("2", json!([{"key": "spot", "effect": "NoSchedule"}, {"key": "other", "value": "x", "effect": "NoExecute"}]))));
        let (req, send) = handle.next_request().await.expect("patch 2");
        let body = body_json(req).await;
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        let taints = body["spec"]["taints"].as_array().unwrap();
        assert_eq!(
            taints.len(),
            3,
            "keeps the taints written concurrently: {taints:?}"
        );
        assert_eq!(taints[2]["key"], "batch-autoscaler.io/retiring");
        assert_eq!(
            body["metadata"]["annotations"]["batch-autoscaler.io/retire-reason"],
            "idle"
        );
        send.send_response(ok(node("3", json!([]))));
    });
    actuator
        .retire(&NodeName::new("n1"), "idle", Time::from_secs(1_795_428_000))
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn conflicts_that_never_end_are_reported_not_looped_forever() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        for i in 0..5 {
            let (_, send) = handle.next_request().await.expect("get");
            send.send_response(ok(node(
                &i.to_string(),
                json!([{"key": "batch-autoscaler.io/retiring", "effect": "NoSchedule"}]),
            )));
            let (_, send) = handle.next_request().await.expect("patch");
            send.send_response(status(409, "Conflict"));
        }
    });
    let err = actuator.unretire(&NodeName::new("n1")).await.unwrap_err();
    assert!(
        matches!(err, K8sError::Conflict { attempts: 5, .. }),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn unretire_of_a_node_without_our_taint_changes_nothing() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        send.send_response(ok(node(
            "1",
            json!([{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]),
        )));
        handle
    });
    // A PATCH would go unanswered and hang: returning at all proves none was sent.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        actuator.unretire(&NodeName::new("n1")),
    )
    .await
    .expect("no patch sent")
    .unwrap();
    let mut handle = server.await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request())
            .await
            .is_err(),
        "no further request"
    );
}

#[tokio::test]
async fn events_are_posted_on_the_pod_and_repeats_are_suppressed() {
    use k8s::events::EventPoster;
    use planner::PlannerEvent;
    let (client, mut handle) = client();
    let mut poster = EventPoster::new(
        client,
        "replica-1".into(),
        "kube-system".into(),
        "batch-autoscaler-status".into(),
    );
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("event post");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().path(),
            "/apis/events.k8s.io/v1/namespaces/ml/events"
        );
        let body = body_json(req).await;
        assert_eq!(body["reason"], "NotTriggerScaleUp");
        assert_eq!(body["regarding"]["kind"], "Pod");
        assert_eq!(body["regarding"]["name"], "train-0");
        assert_eq!(body["reportingController"], "batch-autoscaler");
        let mut echo = body.clone();
        echo["metadata"]["name"] = json!("e1");
        send.send_response(
            Response::builder()
                .status(201)
                .body(Body::from(serde_json::to_vec(&echo).unwrap()))
                .unwrap(),
        );
        handle
    });
    let event = PlannerEvent::NotTriggerScaleUp {
        pod: PodKey::new("ml", "train-0"),
        reasons: Default::default(),
    };
    let failures = poster
        .publish(
            Time::from_secs(1_795_428_000),
            &[(Time::from_secs(1_795_428_000), event.clone())],
        )
        .await
        .unwrap();
    assert_eq!(failures, 0);
    let mut handle = server.await.unwrap();
    // The same explanation a minute later is suppressed: no request at all.
    let failures = poster
        .publish(
            Time::from_secs(1_795_428_060),
            &[(Time::from_secs(1_795_428_060), event)],
        )
        .await
        .unwrap();
    assert_eq!(failures, 0);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request())
            .await
            .is_err()
    );
}

/// Answers the evidence's last read, the pending pods bound to no node, with `items`.
async fn serve_unbound_pods(handle: &mut MockHandle, items: serde_json::Value) {
    let (req, send) = handle.next_request().await.expect("list unbound pods");
    assert_eq!(req.uri().path(), "/api/v1/pods");
    let query = req.uri().query().unwrap_or("").to_owned();
    assert!(
        query.contains("fieldSelector=spec.nodeName%3D%2Cstatus.phase%3DPending"),
        "{query}"
    );
    assert!(!query.contains("resourceVersion"), "a quorum read: {query}");
    send.send_response(ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "11"}, "items": items})));
}

/// A running Job pod bound to `node`, as a PodList.
fn one_running_pod_on(node: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "8"}, "items": [
        {"metadata": {"name": "train", "namespace": "ml", "uid": "u9",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "j", "controller": true}]},
         "spec": {"nodeName": node, "containers": [{"name": "c"}]}, "status": {"phase": "Running"}}]})
}

/// Issue 20, path 2. The node decided on still exists under its name but does not back
/// the instance (no providerID yet, or the name reused by a node of another instance):
/// the pods bound to that name are evidence, so a pod there aborts the removal.
#[tokio::test]
async fn removal_evidence_lists_the_pods_of_the_expected_node_when_it_backs_no_instance() {
    for provider_id in [None, Some("aws:///us-west-2a/i-other")] {
        let (client, mut handle) = client();
        let actuator = Actuator::new(client);
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("get node");
            assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
            let mut spec = json!({});
            if let Some(id) = provider_id {
                spec = json!({"providerID": id});
            }
            send.send_response(ok(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "resourceVersion": "7"}, "spec": spec})));
            let (req, send) = handle.next_request().await.expect("list nodes");
            assert_eq!(req.uri().path(), "/api/v1/nodes");
            send.send_response(ok(json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "9"}, "items": []})));
            let (req, send) = handle.next_request().await.expect("list pods of n1");
            assert_eq!(req.uri().path(), "/api/v1/pods");
            let query = req.uri().query().unwrap_or("").to_owned();
            assert!(
                query.contains("fieldSelector=spec.nodeName%3Dn1"),
                "{query}"
            );
            send.send_response(ok(one_running_pod_on("n1")));
            serve_unbound_pods(&mut handle, json!([])).await;
        });
        let evidence = actuator
            .removal_evidence(&model::InstanceId::new("i-1"), Some(&NodeName::new("n1")))
            .await
            .unwrap();
        // The server fails (instead of waiting) if a read it expects never came.
        drop(actuator);
        server.await.unwrap();
        assert!(evidence.node.is_none(), "{provider_id:?}");
        assert_eq!(evidence.pods.len(), 1, "{provider_id:?}");
        assert_eq!(evidence.pods[0].key.name, "train");
    }
}

/// Issue 20, path 2. The instance now backs a node of another name (a reused name the
/// other way round): the pods of both nodes are read.
#[tokio::test]
async fn removal_evidence_reads_the_expected_node_and_the_node_the_instance_backs() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("get node");
        send.send_response(status(404, "NotFound"));
        let (_, send) = handle.next_request().await.expect("list nodes");
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "9"}, "items": [
            {"metadata": {"name": "n2"}, "spec": {"providerID": "aws:///us-west-2a/i-1"}}]})));
        let mut queries = Vec::new();
        for _ in 0..2 {
            let (req, send) = handle.next_request().await.expect("list pods");
            let query = req.uri().query().unwrap_or("").to_owned();
            let node = if query.contains("%3Dn2") { "n2" } else { "n1" };
            queries.push(node.to_owned());
            send.send_response(ok(if node == "n1" {
                one_running_pod_on("n1")
            } else {
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "8"}, "items": []})
            }));
        }
        serve_unbound_pods(&mut handle, json!([])).await;
        queries
    });
    let evidence = actuator
        .removal_evidence(&model::InstanceId::new("i-1"), Some(&NodeName::new("n1")))
        .await
        .unwrap();
    drop(actuator);
    let mut read = server.await.unwrap();
    read.sort();
    assert_eq!(read, vec!["n1", "n2"]);
    assert_eq!(evidence.node.map(|n| n.name), Some(NodeName::new("n2")));
    assert_eq!(evidence.pods.len(), 1);
}

#[tokio::test]
async fn removal_evidence_is_a_fresh_read_of_the_node_and_the_pods_bound_to_it() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("get node");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
        assert!(
            !req.uri().query().unwrap_or("").contains("resourceVersion"),
            "a quorum read, not a cached one"
        );
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": "7"},
            "spec": {"providerID": "aws:///us-west-2a/i-1", "taints": [{"key": "batch-autoscaler.io/retiring", "effect": "NoSchedule"}]}})));
        let (req, send) = handle.next_request().await.expect("list pods");
        assert_eq!(req.uri().path(), "/api/v1/pods");
        let query = req.uri().query().unwrap_or("").to_owned();
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dn1"),
            "{query}"
        );
        assert!(!query.contains("resourceVersion"), "a quorum read: {query}");
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "8"}, "items": [
            {"metadata": {"name": "late", "namespace": "ns", "uid": "u1",
                "ownerReferences": [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "wf", "uid": "w", "controller": true}]},
             "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {"phase": "Running"}}]})));
        serve_unbound_pods(&mut handle, json!([])).await;
        // The node is not under the expected name: every node is searched by provider id.
        let (req, send) = handle.next_request().await.expect("get node 2");
        assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
        send.send_response(status(404, "NotFound"));
        let (req, send) = handle.next_request().await.expect("list nodes");
        assert_eq!(req.uri().path(), "/api/v1/nodes");
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "9"}, "items": []})));
        // The instance backs no node: what is bound to the expected name is still read.
        let (req, send) = handle.next_request().await.expect("list pods of n1");
        assert_eq!(req.uri().path(), "/api/v1/pods");
        let query = req.uri().query().unwrap_or("").to_owned();
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dn1"),
            "{query}"
        );
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "10"}, "items": []})));
        serve_unbound_pods(&mut handle, json!([])).await;
    });
    let evidence = actuator
        .removal_evidence(&model::InstanceId::new("i-1"), Some(&NodeName::new("n1")))
        .await
        .unwrap();
    let node = evidence.node.expect("the node");
    assert_eq!(node.instance, Some(model::InstanceId::new("i-1")));
    assert!(node
        .taints
        .iter()
        .any(|t| t.key == "batch-autoscaler.io/retiring"));
    assert_eq!(evidence.pods.len(), 1);
    assert_eq!(
        evidence.pods[0].owner,
        model::Owner::controller("argoproj.io", "Workflow", "wf")
    );
    assert_eq!(evidence.pods[0].uid, Some(PodUid::new("u1")));
    let gone = actuator
        .removal_evidence(&model::InstanceId::new("i-1"), Some(&NodeName::new("n1")))
        .await
        .unwrap();
    assert!(gone.node.is_none() && gone.pods.is_empty());
    drop(actuator);
    server.await.unwrap();
}

/// Issue 20, the second edge. A pod that a scheduler placed on the node but has not
/// bound yet (`status.nominatedNodeName`) is in the evidence; one nominated elsewhere is
/// not.
#[tokio::test]
async fn removal_evidence_lists_pods_nominated_to_the_node() {
    let (client, mut handle) = client();
    let actuator = Actuator::new(client);
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("get node");
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "resourceVersion": "7"},
            "spec": {"providerID": "aws:///us-west-2a/i-1", "taints": [{"key": "batch-autoscaler.io/retiring", "effect": "NoSchedule"}]}})));
        let (_, send) = handle.next_request().await.expect("list pods of n1");
        send.send_response(ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "8"}, "items": []})));
        let nominated = |name: &str, node: &str| {
            json!({"metadata": {"name": name, "namespace": "ml"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending", "nominatedNodeName": node}})
        };
        serve_unbound_pods(
            &mut handle,
            json!([nominated("waiting", "n1"), nominated("elsewhere", "n2")]),
        )
        .await;
    });
    let evidence = actuator
        .removal_evidence(&model::InstanceId::new("i-1"), Some(&NodeName::new("n1")))
        .await
        .unwrap();
    drop(actuator);
    server.await.unwrap();
    let names: Vec<&str> = evidence.pods.iter().map(|p| p.key.name.as_str()).collect();
    assert_eq!(names, vec!["waiting"]);
}
