-- 023: roads at different grade levels cross without meeting. A road on a bridge or a flyover has grade_level 1
-- (or more), one in a tunnel below 0, one on the ground 0 or nothing (OpenStreetMap's layer=*). The network
-- (gis_ioc.road_network) nodes the lines of each level where they cross; lines of different levels meet only
-- where an end of one lies on the other (a flyover's ramps), never where they pass over each other.
ALTER TABLE infrastructure ADD COLUMN grade_level smallint CHECK (grade_level BETWEEN -5 AND 5);
