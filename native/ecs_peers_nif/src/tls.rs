//! TLS distribution's credentials for `-proto_dist` (the Elixir side schedules the calls):
//! this task's certificate, issued by the core ([`ecs_peers::tls::credentials`]) from the
//! cluster CA, converted to the forms OTP's ssl takes.

use rustler::{Binary, Encoder, Env, NewBinary, Term};

rustler::atoms! {
    ok,
    error,
    cert,
    key,
    cacerts,
    not_after,
    renew_at,
    names,
    #[allow(non_snake_case)]
    ECPrivateKey,
}

/// `tls_credentials(config)`: `{:ok, %{cert: der, key: {:ECPrivateKey, der}, cacerts: [der],
/// not_after: unix_seconds, renew_at: unix_seconds, names: [String.t()]}}` or
/// `{:error, message}` naming `tls_ca`, what happened and the fix.
///
/// `config` is a keyword list or map of the configuration keys (`tls_ca` and `tls_validity`
/// among them), validated by `ecs_peers::tls::config` (`sources` and the naming keys
/// optional). `renew_at` is when to call again (two thirds of the way to `not_after`). Blocks for the AWS calls (the task metadata, one
/// ecs:DescribeTasks, one GetSecretValue or GetParameter): a dirty I/O NIF. The CA's key is
/// dropped before it returns; the issued key lives on in the returned binary only.
#[rustler::nif(schedule = "DirtyIo")]
fn tls_credentials<'a>(env: Env<'a>, config: Term<'a>) -> Term<'a> {
    match issue(config).and_then(|c| encode(env, &c)) {
        Ok(map) => (ok(), map).encode(env),
        Err(message) => (error(), message).encode(env),
    }
}

/// The result map. The key's binary is BEAM memory, which this library cannot zeroize: it
/// lives until the BEAM collects it (the Rust copy is zeroized when `c` is dropped).
fn encode<'a>(env: Env<'a>, c: &ecs_peers::tls::Credentials) -> Result<Term<'a>, String> {
    let cacert_list = c.cacerts.iter().map(|d| binary(env, d)).collect::<Vec<_>>();
    Term::map_from_pairs(
        env,
        &[
            (cert().encode(env), binary(env, &c.cert_der)),
            (
                key().encode(env),
                (ECPrivateKey(), binary(env, &c.key_der)).encode(env),
            ),
            (cacerts().encode(env), cacert_list.encode(env)),
            (not_after().encode(env), c.not_after.encode(env)),
            (renew_at().encode(env), c.renew_at.encode(env)),
            (names().encode(env), c.names.encode(env)),
        ],
    )
    .map_err(|_| "tls_credentials: cannot build the result map".to_string())
}

fn issue(config: Term) -> Result<ecs_peers::tls::Credentials, String> {
    let value = crate::decode::term_to_value(config, "(config)", 0)?;
    let config = ecs_peers::tls::config(value).map_err(|e| e.to_string())?;
    // The calls run on the NIF's runtime threads (see boot.rs: the SDK's futures are deep, a
    // dirty scheduler's stack is small); this thread only waits.
    let runtime = crate::runtime::runtime()?;
    runtime
        .block_on(runtime.spawn(async move { ecs_peers::tls::credentials(&config).await }))
        .map_err(|e| format!("tls_ca: issuing this task's certificate failed: {e}"))?
        .map_err(|e| e.to_string())
}

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut b = NewBinary::new(env, bytes.len());
    b.as_mut_slice().copy_from_slice(bytes);
    Binary::from(b).encode(env)
}
