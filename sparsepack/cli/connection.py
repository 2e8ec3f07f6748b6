"""The connection flags every cluster command takes (URL, auth, TLS, timeouts), and the options they make."""

from __future__ import annotations

import argparse


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "connection (flags win over OPENSEARCH_URL, OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD, ...)"
    )
    g.add_argument("--url", help="cluster URL (env OPENSEARCH_URL; default http://localhost:9200)")
    g.add_argument("--username", help="basic-auth user (env OPENSEARCH_USERNAME)")
    g.add_argument("--password", help="basic-auth password (prefer env OPENSEARCH_PASSWORD: flags show in ps)")
    g.add_argument("--api-key", help="API key (env OPENSEARCH_API_KEY)")
    g.add_argument("--ca-certs", help="CA bundle for a private CA (env OPENSEARCH_CA_CERTS)")
    g.add_argument("--client-cert", help="client certificate (PEM)")
    g.add_argument("--client-key", help="client key (PEM)")
    g.add_argument("--insecure", action="store_true", help="skip TLS certificate verification (explicit opt-out)")
    g.add_argument("--aws-region", help="sign requests with AWS SigV4 for Amazon OpenSearch Service")
    g.add_argument("--aws-service", default="es", choices=("es", "aoss"), help="es (domains) or aoss (serverless)")
    g.add_argument("--request-timeout", type=float, default=60.0, help="seconds per HTTP request")


def connection_options(args):
    from ..registry.connection import ConnectionOptions

    return ConnectionOptions.from_env(
        url=args.url,
        username=args.username,
        password=args.password,
        api_key=args.api_key,
        ca_certs=args.ca_certs,
        client_cert=args.client_cert,
        client_key=args.client_key,
        insecure=args.insecure or None,
        aws_region=args.aws_region,
        aws_service=args.aws_service,
        timeout=args.request_timeout,
    )


def connect(args):
    from ..registry.connection import connect as open_cluster

    return open_cluster(connection_options(args))
