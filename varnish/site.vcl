# docker-compose.yml's site for data-api.vcl: Varnish in front of nginx (`lb`, which balances
# the replicas), and purges allowed from the compose network. A deployment replaces this file.

backend lb {
    .host = "lb";
    .port = "8000";
    .probe = {
        .url = "/health/live";
        .interval = 2s;
        .timeout = 1s;
        .window = 3;
        .threshold = 2;
    }
}

# Who may purge: the replicas' addresses (compose networks are private ranges).
acl purgers {
    "127.0.0.1";
    "::1";
    "10.0.0.0"/8;
    "172.16.0.0"/12;
    "192.168.0.0"/16;
}

sub data_api_backend {
    set req.backend_hint = lb;
}
