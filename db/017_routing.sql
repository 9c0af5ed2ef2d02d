-- 017: routing over the road network with pgRouting (gis_ioc.routing). Roads may be one-way or have their own
-- speed, and two more classes (urban streets, tracks). The routable network is made from the layers that say
-- they are a network source (layers/*.yaml: network): lines noded where they meet, costs in seconds; it is made
-- again, into new tables swapped in at the end, when a source layer's version moves (readers never wait on it).
CREATE EXTENSION IF NOT EXISTS pgrouting;

ALTER TABLE infrastructure DROP CONSTRAINT infrastructure_road_class_check;
ALTER TABLE infrastructure ADD CONSTRAINT infrastructure_road_class_check
    CHECK (road_class IN ('national', 'provincial', 'district', 'urban', 'track'));
ALTER TABLE infrastructure ADD COLUMN oneway boolean;
ALTER TABLE infrastructure ADD COLUMN speed_kmh real CHECK (speed_kmh > 0 AND speed_kmh <= 200);

CREATE TABLE network_edges (
    id            bigint PRIMARY KEY,
    source        bigint NOT NULL,
    target        bigint NOT NULL,
    cost          double precision NOT NULL,   -- seconds, source to target
    reverse_cost  double precision NOT NULL,   -- seconds, target to source; -1 on a one-way road
    length_m      double precision NOT NULL,
    speed_kmh     real NOT NULL,
    road_class    text,
    name          text,
    layer_table   text NOT NULL,
    road_id       text NOT NULL,
    geom          geometry(LineString, 4326) NOT NULL
);
CREATE INDEX network_edges_geom_idx ON network_edges USING gist (geom);

CREATE TABLE network_vertices (
    id    bigint PRIMARY KEY,
    geom  geometry(Point, 4326) NOT NULL
);
CREATE INDEX network_vertices_geom_idx ON network_vertices USING gist (geom);

-- what the network was made from: each source layer's version then (gis_ioc.routing.ensure compares)
CREATE TABLE network_state (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    sources        jsonb NOT NULL,
    built_at       timestamptz NOT NULL DEFAULT now(),
    edges          integer NOT NULL,
    vertices       integer NOT NULL,
    build_seconds  real NOT NULL
);
