//! The CronJob controller against the real binary and the real kubectl, with the test playing the kubelet (it
//! finishes the Job's pod through the status subresource). It waits for one real minute boundary; the
//! scheduling decisions themselves are unit-tested in `components/controllers/src/cronjob.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use bonsai_e2e::as_node::{finish_pod, get, kubectl_file};
use bonsai_e2e::{Server, fails, ok};
use serde_json::Value;

/// Polls `check` every 200 ms until it gives a value; fails the test after `timeout`, naming `what`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Seconds since the epoch of an RFC 3339 time in UTC (`date` reads it, as the harness does for the clock).
fn epoch_seconds(rfc3339: &str) -> i64 {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

fn cronjob_manifest(name: &str, schedule: &str, extra_spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {{"name": "{name}"}},
            "spec": {{"schedule": "{schedule}", {extra_spec}
              "jobTemplate": {{"metadata": {{"labels": {{"app": "{name}"}}, "annotations": {{"team": "ops"}}}},
                "spec": {{"template": {{"spec": {{"restartPolicy": "Never",
                  "containers": [{{"name": "c", "image": "busybox:1"}}]}}}}}}}}}}}}"#
    )
}

/// The Jobs in `default` the CronJob `tick`'s schedule made (the manual one excluded).
fn scheduled_jobs(server: &Server) -> Vec<Value> {
    get(server, &["jobs", "-l", "app=tick"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["metadata"]["name"] != "manual")
        .cloned()
        .collect()
}

#[test]
fn a_cronjob_starts_a_job_each_minute_and_records_its_success() {
    let server = Server::start(&["--disable-scheduler"]);
    kubectl_file(
        &server,
        "create",
        "tick.json",
        &cronjob_manifest("tick", "* * * * *", ""),
    );
    let cronjob = get(&server, &["cronjob", "tick"]);
    let uid = cronjob["metadata"]["uid"].as_str().unwrap().to_string();
    // Kubernetes' defaults.
    let spec = &cronjob["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);

    // A schedule robfig/cron refuses, and a zone that does not exist: a 422 naming both fields.
    let file = server.dir.path().join("broken.json");
    std::fs::write(
        &file,
        cronjob_manifest("broken", "every minute", r#""timeZone": "Mars/Olympus","#),
    )
    .unwrap();
    let refused = fails(server.kubectl(33, &["create", "-f", file.to_str().unwrap()]));
    assert!(
        refused.contains(r#"The CronJob "broken" is invalid"#),
        "{refused}"
    );
    assert!(
        refused
            .contains(r#"spec.schedule: Invalid value: "every minute": expected exactly 5 fields, found 2"#),
        "{refused}"
    );
    assert!(
        refused.contains(r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#),
        "{refused}"
    );
    assert!(fails(server.kubectl(33, &["get", "cronjob", "broken"])).contains("NotFound"));

    // kubectl's own Job from the CronJob's template, owned by it.
    ok(server.kubectl(33, &["create", "job", "--from=cronjob/tick", "manual"]));
    let manual = get(&server, &["job", "manual"]);
    assert_eq!(
        manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(manual["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    assert_eq!(
        manual["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1"
    );

    // The next minute boundary makes the Job, named after its minute.
    let job = wait_for("the first scheduled job", Duration::from_secs(70), || {
        scheduled_jobs(&server).into_iter().next()
    });
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let scheduled = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let scheduled_at = epoch_seconds(&scheduled);
    assert_eq!(scheduled_at % 60, 0, "{scheduled}");
    assert_eq!(name, format!("tick-{}", scheduled_at / 60));
    assert!(scheduled.ends_with('Z'), "UTC without spec.timeZone: {scheduled}");
    assert_eq!(job["metadata"]["annotations"]["team"], "ops");
    let owner = &job["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "CronJob");
    assert_eq!(owner["name"], "tick");
    assert_eq!(owner["uid"], uid.as_str());
    assert_eq!(owner["controller"], true);
    // Woken at the scheduled time (Kubernetes: 100 ms after it), not some polling interval later; the margin
    // is for a loaded machine.
    let created_at = epoch_seconds(job["metadata"]["creationTimestamp"].as_str().unwrap());
    assert!(
        (0..=5).contains(&(created_at - scheduled_at)),
        "created at {created_at}, scheduled for {scheduled_at}"
    );
    let status = wait_for("the job in status.active", Duration::from_secs(10), || {
        let status = get(&server, &["cronjob", "tick"])["status"].clone();
        let listed = status["active"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["name"] == name.as_str()));
        listed.then_some(status)
    });
    assert_eq!(
        epoch_seconds(status["lastScheduleTime"].as_str().unwrap()),
        scheduled_at
    );
    assert!(status.get("lastSuccessfulTime").is_none(), "{status}");

    // The kubelet's part: the Job's pod ran and exited 0, so the Job completes.
    let selector = format!("batch.kubernetes.io/job-name={name}");
    let pod = wait_for("the job's pod", Duration::from_secs(15), || {
        get(&server, &["pods", "-l", &selector])["items"][0]["metadata"]["name"]
            .as_str()
            .map(String::from)
    });
    finish_pod(&server, &pod, 0);
    let status = wait_for("lastSuccessfulTime", Duration::from_secs(20), || {
        let status = get(&server, &["cronjob", "tick"])["status"].clone();
        let done = status.get("lastSuccessfulTime").is_some()
            && !status["active"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["name"] == name.as_str()));
        done.then_some(status)
    });
    let completed = get(&server, &["job", &name])["status"]["completionTime"].clone();
    assert_eq!(status["lastSuccessfulTime"], completed);

    // The events `kubectl describe cronjob` lists, in Kubernetes' words.
    let events = get(&server, &["events"]);
    let messages: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "CronJob" && e["involvedObject"]["name"] == "tick")
        .filter_map(|e| e["message"].as_str())
        .collect();
    for wanted in [
        format!("Created job {name}"),
        format!("Saw completed job: {name}, condition: Complete"),
        "Saw a job that the controller did not create or forgot: manual".to_string(),
    ] {
        assert!(
            messages.contains(&wanted.as_str()),
            "{wanted:?} not in {messages:?}"
        );
    }
}
