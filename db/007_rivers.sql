-- 007: rivers in the infrastructure layer (kind 'river'), so a wall without a basemap shows them.
ALTER TABLE infrastructure DROP CONSTRAINT infrastructure_kind_check;
ALTER TABLE infrastructure ADD CONSTRAINT infrastructure_kind_check CHECK (kind IN ('hospital', 'health_station',
    'school', 'police', 'fire_station', 'border_post', 'government_office', 'shelter', 'border_gate', 'hydropower',
    'substation', 'water_plant', 'reservoir', 'bridge', 'road', 'river'));
