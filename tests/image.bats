#!/usr/bin/env bats
# The container image: its entrypoint and health check scripts (docker/), compose.yaml,
# and, with DM_IMAGE_TEST=1 (slow: minutes), scripts/image-test, which builds the image
# with podman and migrates Pagila with the programs it holds (`make image-test` alone).

load common
bats_require_minimum_version 1.5.0

@test "dm-entrypoint: an unknown program is refused with exit 127, naming it" {
    run -127 docker/dm-entrypoint no-such-program --flag
    assert_output --partial 'dm-entrypoint: no-such-program: no such program'
}

@test "dm-entrypoint: options alone are dm-serve's" {
    # A PATH without dm-serve, so that the refusal shows which program was meant.
    PATH=/nonexistent:/usr/bin:/bin run -127 "$DM_REPO/docker/dm-entrypoint" --listen 127.0.0.1:1
    assert_output --partial 'dm-entrypoint: dm-serve: no such program'
}

@test "dm-entrypoint: runs a dm program by name with its arguments" {
    run -0 docker/dm-entrypoint dm-migrate --version
    assert_output --regexp '^dm-migrate \(dm\) '
    run -2 docker/dm-entrypoint dm-migrate --no-such-option
    assert_output --partial 'usage: dm-migrate'
}

@test "dm-healthcheck: a closed port is unhealthy" {
    port=$(_cl_pick_port)
    run -1 docker/dm-healthcheck 127.0.0.1 "$port"
    assert_output "dm-healthcheck: cannot connect to 127.0.0.1:$port"
}

@test "dm-healthcheck: 200 on /v1/health is healthy, 404 is not" {
    command -v python3 >/dev/null || skip "python3 is not installed (the HTTP server of this test)"
    mkdir -p "$BATS_TEST_TMPDIR/www/v1"
    port=$(_cl_pick_port)
    python3 -m http.server --bind 127.0.0.1 --directory "$BATS_TEST_TMPDIR/www" "$port" \
        >"$BATS_TEST_TMPDIR/http.log" 2>&1 3>&- &
    pid=$!
    deadline=$((SECONDS + 30))
    until _cl_port_in_use "$port"; do
        ((SECONDS < deadline)) || { kill "$pid"; fail "the test's HTTP server did not listen within 30 s"; }
        sleep 0.1
    done
    run -1 docker/dm-healthcheck 127.0.0.1 "$port"
    assert_output "dm-healthcheck: GET /v1/health on 127.0.0.1:$port: status 404"
    echo '{"live": true}' >"$BATS_TEST_TMPDIR/www/v1/health"
    run -0 docker/dm-healthcheck 127.0.0.1 "$port"
    kill "$pid"
}

@test "compose.yaml: valid with .env.example, refused without the secrets" {
    command -v docker-compose >/dev/null || skip "docker-compose is not installed (apt-get install docker-compose)"
    run -0 docker-compose --project-directory "$DM_REPO" -f compose.yaml --env-file .env.example config -q
    : >"$BATS_TEST_TMPDIR/empty.env"
    run ! env -u LEGACY_PASSWORD -u SUPABASE_PASSWORD -u APP_OWNER_PASSWORD -u DM_API_TOKEN \
        docker-compose --project-directory "$DM_REPO" -f compose.yaml --env-file "$BATS_TEST_TMPDIR/empty.env" config -q
    assert_output --partial 'in .env'
}

@test "image: podman build, then the image's dm-migrate migrates Pagila as its user (DM_IMAGE_TEST=1)" {
    [[ "${DM_IMAGE_TEST:-}" == 1 ]] ||
        skip "slow (minutes): DM_IMAGE_TEST=1 make check, or make image-test"
    run scripts/image-test
    # Its progress (timings, image size) goes into the TAP output either way.
    grep '^# image-test' <<<"$output" >&3 || true
    assert_success
}
